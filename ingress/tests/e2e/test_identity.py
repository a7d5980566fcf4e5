"""Identity and credentials: JWT bearer tokens from an IdP, the protected
resource metadata, and upstream credential injection.

Keys are generated here (``cryptography``), published as a JWKS file that
toolgate reads, and tokens are signed here (PyJWT) or forged by hand for the
refusal cases. The ``vault`` SDK upstream's ``whoami`` tool echoes the
``Authorization`` header it received, so the tests see what toolgate injected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import release_gate, start_gate, upstream_cfgs
from harness import (
    HTTP_TIMEOUT_S,
    MODERN_VERSION,
    UNAUTHORIZED,
    Agent,
    UpstreamCfg,
    UpstreamProc,
    assert_jsonrpc_error,
    modern_headers,
    modern_request,
    result_json,
    sdk_client_cm,
)

ISSUER = "https://idp.example.com"
AUDIENCE = "https://toolgate.example.com/mcp"
SECRET = "crm-secret-" + "c4n4ry" * 4
AGENT_TOOLS = ["vault__whoami", "vault__headers", "crm__lookup_customer"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdP:
    """Three signing keys (RSA, EC P-256, Ed25519) and a JWKS of their public halves."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict:
        keys = []
        for kid, algo, key in (
            ("rsa-1", RSAAlgorithm, self.rsa),
            ("ec-1", ECAlgorithm, self.ec),
            ("ed-1", OKPAlgorithm, self.ed),
        ):
            jwk = algo.to_jwk(key.public_key(), as_dict=True)
            jwk["kid"] = kid
            keys.append(jwk)
        return {"keys": keys}

    def claims(self, agent: str = "support-bot", **over) -> dict:
        now = int(time.time())
        c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "azp": agent, "iat": now, "exp": now + 300,
             "groups": ["support"]}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, alg: str = "RS256", kid: str | None = None, key=None, **over) -> str:
        default = {"RS256": ("rsa-1", self.rsa), "ES256": ("ec-1", self.ec), "EdDSA": ("ed-1", self.ed)}[alg]
        return jwt.encode(self.claims(**over), key or default[1], algorithm=alg,
                          headers={"kid": kid or default[0]})


def forged(header: dict, claims: dict, signature: bytes = b"x") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


@pytest.fixture(scope="module")
def idp() -> IdP:
    return IdP()


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    p = UpstreamProc("vault", "json")
    p.start(tmp_path_factory.mktemp("vault-logs"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gate(tmp_path_factory, upstreams, vault, idp):
    work = tmp_path_factory.mktemp("identity-gate")
    (work / "jwks.json").write_text(json.dumps(idp.jwks()))
    (work / "crm.token").write_text(SECRET + "\n")
    ups = upstream_cfgs(upstreams) + [
        UpstreamCfg(name="vault", url=vault.url,
                    credential={"value_prefix": "Bearer ", "file": "crm.token"}),
    ]
    agents = [Agent("support-bot", list(AGENT_TOOLS)), Agent("billing-bot", ["crm__delete_record"])]
    extra = f"""
[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "jwks.json"
agent_claim = "azp"
groups_claim = "groups"
leeway_s = 30

[policies]
watch = true
"""
    g = start_gate(work, ups, agents, extra_toml=extra)
    yield g
    release_gate(g)


def call(gate, token: str | None, tool: str = "vault__whoami", args: dict | None = None,
         extra_headers: dict | None = None) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": args or {}})
    headers = modern_headers("tools/call", tool, token)
    headers.update(extra_headers or {})
    return httpx.post(gate.url, json=body, headers=headers, timeout=HTTP_TIMEOUT_S)


def text_of(r: httpx.Response) -> str:
    result = r.json()["result"]
    return result["content"][0]["text"]


def test_jwt_agent_gets_injected_credential_not_its_token(gate, idp):
    token = idp.token("RS256")
    before = gate.audit_len()
    r = call(gate, token)
    assert r.status_code == 200, r.text
    assert text_of(r) == f"Bearer {SECRET}"
    [rec] = gate.audit_after(before)
    assert rec["agent"] == "support-bot"
    assert rec["user"] == "alice"
    assert rec["decision"] == "allow"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_ec_and_eddsa_tokens_verify(gate, idp, alg):
    r = call(gate, idp.token(alg), tool="crm__lookup_customer", args={"customer_id": "C-9"})
    assert r.status_code == 200, r.text


def test_act_claim_names_the_agent_and_sub_the_user(gate, idp):
    token = idp.token(azp="someone-else", sub="bob", act={"sub": "support-bot"})
    before = gate.audit_len()
    assert call(gate, token).status_code == 200
    [rec] = gate.audit_after(before)
    assert (rec["agent"], rec["user"]) == ("support-bot", "bob")


def test_on_behalf_of_must_agree_with_the_token(gate, idp):
    token = idp.token()
    assert call(gate, token, extra_headers={"Toolgate-On-Behalf-Of": "alice"}).status_code == 200
    r = call(gate, token, extra_headers={"Toolgate-On-Behalf-Of": "mallory"})
    assert r.status_code == 403
    assert "someone other" in r.json()["error"]["message"]


def test_api_keys_still_work_beside_jwt(gate):
    r = call(gate, gate.agents["support-bot"].key)
    assert r.status_code == 200
    assert text_of(r) == f"Bearer {SECRET}"


def test_sdk_client_with_a_jwt(gate, idp):
    async def go():
        async with sdk_client_cm(gate.url, idp.token("EdDSA"), MODERN_VERSION) as client:
            tools = await client.list_tools()
            assert sorted(t.name for t in tools.tools) == sorted(AGENT_TOOLS)
            res = await client.call_tool("vault__whoami", {})
            assert result_json(res) == f"Bearer {SECRET}"

    anyio.run(go)


def bad_tokens(idp: IdP) -> list[tuple[str, str]]:
    now = int(time.time())
    pub_pem = idp.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    hs_body = b64(json.dumps(idp.claims()).encode())
    hs_sig = b64(hmac.new(pub_pem, f"{hs_head}.{hs_body}".encode(), hashlib.sha256).digest())
    good = idp.token()
    h, p, s = good.split(".")
    flipped = s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB")
    return [
        ("token_expired", idp.token(exp=now - 120, iat=now - 600)),
        ("token_not_yet_valid", idp.token(nbf=now + 600)),
        ("token_wrong_audience", idp.token(aud="https://other.example.com/mcp")),
        ("token_wrong_audience", idp.token(aud=["https://a", "https://b"])),
        ("token_wrong_issuer", idp.token(iss="https://evil.example.com")),
        ("token_bad_signature", f"{h}.{p}.{flipped}"),
        ("token_bad_signature", idp.token(key=idp.other)),
        ("token_unknown_key", idp.token(kid="rsa-9")),
        ("token_algorithm_refused", forged({"alg": "none", "kid": "rsa-1"}, idp.claims())),
        ("token_algorithm_refused", f"{hs_head}.{hs_body}.{hs_sig}"),
        ("token_algorithm_refused", idp.token("ES256", kid="rsa-1")),
        ("token_malformed", "bm90IGpzb24.e30.eA"),
        ("token_unknown_agent", idp.token(agent="ghost-bot")),
    ]


def test_bad_tokens_are_401_with_metadata_and_a_specific_reason(gate, idp):
    for reason, token in bad_tokens(idp):
        before = gate.audit_len()
        r = call(gate, token)
        assert r.status_code == 401, (reason, r.text)
        err = r.json()["error"]
        assert err["code"] == UNAUTHORIZED, reason
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer "), challenge
        assert f'resource_metadata="http://127.0.0.1:{gate.port}/.well-known/oauth-protected-resource"' in challenge
        assert 'error="invalid_token"' in challenge
        [rec] = gate.audit_after(before)
        assert rec["reason"] == reason, (reason, rec)
        assert rec["decision"] == "deny"


def test_missing_token_401_points_at_metadata(gate):
    r = call(gate, None)
    assert r.status_code == 401
    assert "resource_metadata=" in r.headers["www-authenticate"]


def test_token_in_query_string_is_not_accepted(gate, idp):
    body = modern_request("tools/call", {"name": "vault__whoami", "arguments": {}})
    r = httpx.post(f"{gate.url}?access_token={idp.token()}", json=body,
                   headers=modern_headers("tools/call", "vault__whoami"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 401


def test_protected_resource_metadata(gate):
    r = httpx.get(f"{gate.base}/.well-known/oauth-protected-resource", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    assert r.json() == {
        "resource": AUDIENCE,
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [],
    }


def test_metadata_is_404_without_jwt(make_gate):
    g = make_gate()
    r = httpx.get(f"{g.base}/.well-known/oauth-protected-resource", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404
    r = httpx.post(g.url, json=modern_request("ping"), headers=modern_headers("ping"), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="toolgate"'


def test_credential_file_change_is_picked_up(gate):
    path = gate.workdir / "crm.token"
    key = gate.agents["support-bot"].key
    path.write_text("rotated-" + SECRET + "\n")
    deadline = time.monotonic() + 5
    seen = ""
    while time.monotonic() < deadline:
        seen = text_of(call(gate, key))
        if seen == f"Bearer rotated-{SECRET}":
            break
        time.sleep(0.2)
    path.write_text(SECRET + "\n")
    assert seen == f"Bearer rotated-{SECRET}"
    # Later tests expect the original value: wait until it is back in use.
    deadline = time.monotonic() + 5
    while text_of(call(gate, key)) != f"Bearer {SECRET}" and time.monotonic() < deadline:
        time.sleep(0.2)


def test_agent_cookies_and_token_never_reach_the_upstream(gate, idp):
    """The agent's cookies, its bearer token and any other credential-shaped
    header stop at toolgate: the upstream (``vault__headers`` echoes every
    header it got) sees toolgate's injected credential and nothing of the
    agent's."""
    canary = "canary-" + secrets.token_hex(8)
    sent = {
        "Cookie": f"session={canary}; theme=dark",
        "Proxy-Authorization": f"Basic {canary}",
        "X-Api-Key": canary,
    }
    for token in (gate.agents["support-bot"].key, idp.token()):
        r = call(gate, token, tool="vault__headers", extra_headers=sent)
        assert r.status_code == 200, r.text
        received = {k.lower(): v for k, v in json.loads(text_of(r)).items()}
        assert "cookie" not in received, received
        assert "proxy-authorization" not in received and "x-api-key" not in received, received
        assert received["authorization"] == f"Bearer {SECRET}"
        echoed = json.dumps(received)
        assert canary not in echoed and token not in echoed, received
    time.sleep(0.3)
    assert canary not in gate.stderr_text()
    assert canary not in "\n".join(json.dumps(l) for l in gate.read_audit())


def test_credential_file_refresh_withdraws_unusable_values_and_keeps_through_unreadable(tmp_path, upstreams, vault):
    """A file credential follows its file: a new value is used within a
    second; emptied or garbage content withdraws it (calls to that upstream
    refused, clearly, and audited; other upstreams unaffected); a deleted
    file keeps the last good value. Every bad change is an error in the log
    naming the upstream and the file, never a value."""
    import os

    work = tmp_path / "gate"
    work.mkdir()
    path = work / "vault.token"

    def put(text: str) -> None:
        staged = work / "vault.token.new"
        staged.write_text(text)
        os.replace(staged, path)

    put("first-" + SECRET)
    ups = upstream_cfgs(upstreams) + [
        UpstreamCfg(name="vault", url=vault.url, credential={"value_prefix": "Bearer ", "file": "vault.token"}),
    ]
    agent = Agent("support-bot", list(AGENT_TOOLS))
    g = start_gate(work, ups, [agent])

    def whoami() -> httpx.Response:
        return call(g, agent.key)

    def until(pred, timeout: float = 3.0) -> float:
        started = time.monotonic()
        while not pred():
            assert time.monotonic() - started < timeout, "no change seen in time"
            time.sleep(0.1)
        return time.monotonic() - started

    try:
        assert text_of(whoami()) == f"Bearer first-{SECRET}"
        # A new value is picked up within about a second.
        put("second-" + SECRET)
        took = until(lambda: text_of(whoami()) == f"Bearer second-{SECRET}")
        assert took < 2.0, took

        # Emptied: the credential is withdrawn, not sent stale or blank.
        put("")
        until(lambda: whoami().status_code == 503)
        before = g.audit_len()
        r = whoami()
        body = assert_jsonrpc_error(r, 503, -32000)
        assert "credential" in body["error"]["message"]
        assert SECRET not in r.text
        [rec] = g.audit_after(before)
        assert (rec["upstream"], rec["reason"], rec["status"]) == ("vault", "upstream_credential_unavailable", 503), rec
        # Other upstreams are unaffected.
        ok = call(g, agent.key, tool="crm__lookup_customer", args={"customer_id": "C-1"})
        assert ok.status_code == 200, ok.text
        # Garbage (control characters) is no better than nothing.
        put("third-\x01-" + SECRET)
        time.sleep(1.5)
        assert whoami().status_code == 503
        # A usable value puts it back.
        put("fourth-" + SECRET)
        until(lambda: whoami().status_code == 200)
        assert text_of(whoami()) == f"Bearer fourth-{SECRET}"

        # Deleted: the last good value stays (a secret tool swapping the file
        # must not cause an outage), and the log says so.
        path.unlink()
        until(lambda: "keeping the previous credential" in g.stderr_text())
        assert text_of(whoami()) == f"Bearer fourth-{SECRET}"
        put("fifth-" + SECRET)
        until(lambda: text_of(whoami()) == f"Bearer fifth-{SECRET}")

        log = g.stderr_text()
        withdrawn = [l for l in log.splitlines() if "credential withdrawn" in l]
        assert withdrawn and all("ERROR" in l and "vault" in l and str(path) in l for l in withdrawn), withdrawn
        assert SECRET not in log
        assert SECRET not in "\n".join(json.dumps(l) for l in g.read_audit())
    finally:
        release_gate(g)


def test_canary_secret_and_tokens_never_leak(gate, idp):
    token = idp.token()
    bodies = [call(gate, token).text, call(gate, gate.agents["support-bot"].key).text]
    for _, bad in bad_tokens(idp):
        bodies.append(call(gate, bad).text)
    time.sleep(0.5)
    audit = "\n".join(json.dumps(l) for l in gate.read_audit())
    stderr = gate.stderr_text()
    for where, text in (("audit", audit), ("stderr", stderr)):
        assert SECRET not in text, where
        assert token not in text, where
        assert token.split(".")[2] not in text, where
        assert gate.agents["support-bot"].key not in text, where
    # The agent sees the upstream's echo only through whoami (that is the
    # test tool's purpose); no refusal or other answer carries the secret.
    for b in bodies[2:]:
        assert SECRET not in b
        assert token not in b


def test_missing_credential_stops_start(tmp_path, upstreams):
    from harness import Gate

    ups = upstream_cfgs(upstreams)
    ups[0].credential = {"env": "TOOLGATE_TEST_NO_SUCH_VAR"}
    g = Gate(tmp_path / "g", ups, [Agent("a", [])])
    g.spawn()
    assert g.proc is not None
    g.proc.wait(timeout=15)
    assert g.proc.returncode != 0
    err = g.stderr_text()
    assert "upstream `crm`: credential environment variable `TOOLGATE_TEST_NO_SUCH_VAR` is not set" in err


def test_credential_from_env_and_command(tmp_path, upstreams, vault, monkeypatch):
    monkeypatch.setenv("TOOLGATE_TEST_VAULT_TOKEN", "env-" + SECRET)
    for cred, expected in (
        ({"env": "TOOLGATE_TEST_VAULT_TOKEN", "header": "Authorization", "value_prefix": "Token "},
         f"Token env-{SECRET}"),
        ({"command": ["printf", "cmd-" + SECRET]}, f"cmd-{SECRET}"),
    ):
        ups = [UpstreamCfg(name="vault", url=vault.url, credential=cred)]
        agent = Agent("a", ["vault__whoami"])
        g = start_gate(tmp_path / cred.get("env", "cmd"), ups, [agent])
        try:
            assert text_of(call(g, agent.key)) == expected
            assert SECRET not in g.stderr_text()
        finally:
            release_gate(g)


def test_rotated_jwks_is_picked_up_on_change(gate, idp):
    new_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(idp.claims(), new_key, algorithm="ES256", headers={"kid": "ec-2"})
    assert call(gate, token).status_code == 401
    jwks = idp.jwks()
    jwk = ECAlgorithm.to_jwk(new_key.public_key(), as_dict=True)
    jwk["kid"] = "ec-2"
    jwks["keys"].append(jwk)
    (gate.workdir / "jwks.json").write_text(json.dumps(jwks))
    deadline = time.monotonic() + 6
    status = 0
    while time.monotonic() < deadline:
        status = call(gate, token).status_code
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200


def test_token_groups_reach_cedar(tmp_path, upstreams, idp):
    work = tmp_path / "groups"
    work.mkdir()
    (work / "jwks.json").write_text(json.dumps(idp.jwks()))
    (work / "admins.cedar").write_text(
        '@id("delete-admins-only")\n'
        'permit(principal, action == Toolgate::Action::"crm__delete_record", resource)\n'
        'when { context has user && context.user in Toolgate::Group::"admins" };\n'
    )
    extra = f"""
[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "jwks.json"
groups_claim = "groups"

[policies]
files = ["admins.cedar"]
"""
    g = start_gate(work, upstream_cfgs(upstreams), [Agent("billing-bot", ["crm__delete_record"])], extra_toml=extra)
    try:
        args = {"record_id": "R-1"}
        admin = idp.token(agent="billing-bot", sub="carol", groups=["admins"])
        plain = idp.token(agent="billing-bot", sub="carol", groups=["support"])
        assert call(g, admin, "crm__delete_record", args).status_code == 200
        before = g.audit_len()
        assert call(g, plain, "crm__delete_record", args).status_code == 403
        [rec] = g.audit_after(before)
        assert (rec["user"], rec["reason"]) == ("carol", "no_permit")
        # the same user with admin groups again: not a stale cached deny
        assert call(g, admin, "crm__delete_record", args).status_code == 200
    finally:
        release_gate(g)
