"""End-user token exchange (RFC 8693): for an upstream with
``[upstreams.identity] mode = "token_exchange"`` toolgate exchanges the
user's own token -- the IdP's JWT that identified the call -- at the IdP's
token endpoint for a token scoped to that upstream (RFC 8707 ``resource``),
optionally with the agent as the actor, caches it per user, agent and
upstream, and sends it in place of the agent's.

    agent (SDK client or hand-written HTTP; the user's IdP token, or an API key)
        -> toolgate ([auth.jwt] trusting the IdP's /jwks; [identity_assertions] for actor tokens)
            -> crm    whoami_server.py --bearer  (token_exchange, actor = true)
            -> files  whoami_server.py --bearer  (token_exchange, service credential, fallback = "credential")
            -> ghost  whoami_server.py --bearer  (token_exchange at a token endpoint nobody listens on)
        IdP: exchange_idp.mjs, the `oidc-provider` package with the token-exchange grant

Each ``whoami`` verifies the bearer token it received against the IdP's
published keys (PyJWT), requiring its own URL as the audience, and says whom
it names. The user's login token is minted here with the IdP's own signing
key and issuer (the step a browser login would take); everything after that
is the real provider.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conftest import release_gate, start_gate
from harness import (
    E2E_DIR,
    HOST,
    HTTP_TIMEOUT_S,
    MODERN_VERSION,
    Agent,
    Gate,
    free_port,
    modern_headers,
    modern_request,
    sdk_client_cm,
    spawn_server,
    stop_process,
    toml_value,
)
from test_identity_assertions import WhoamiProc, verdict, write_ed25519_key

IDP_SCRIPT = E2E_DIR / "exchange_idp.mjs"
NODE = "node"
AUDIENCE = "https://toolgate.test/mcp"
ASSERTION_ISSUER = "https://toolgate.test"
CLIENT_ID = "toolgate"
CLIENT_SECRET = "exchange-client-secret-canary-7f3e"
SERVICE_TOKEN = "files-service-token-canary-91ab"
TTL_S = 300
ON_BEHALF_OF = "Toolgate-On-Behalf-Of"
TOOLS = ["crm__whoami", "files__whoami", "ghost__whoami"]
# The exchange's own limit is 5 s; a slow IdP answers after 8 s.
SLOW_CALL_BOUND_S = 7.5


class ExchangeIdP:
    """``exchange_idp.mjs`` under Node, started and stopped by its pid."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.issuer = f"http://{HOST}:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.config_path = work / "idp.json"
        self.log_path = work / "idp.log"
        self.proc: subprocess.Popen | None = None

    def start(self, resources: list[str], gate_port: int, connect: dict[str, Any] | None = None) -> None:
        """Starts it issuing tokens for ``resources``, taking actor tokens
        signed with the keys of the gate at ``gate_port``; with ``connect``
        (``client_id``, ``client_secret``, ``redirect_uris``, ``ttl_s``) it
        also serves that client the authorization code flow."""
        jwk = RSAAlgorithm.to_jwk(self.key, as_dict=True)
        jwk.pop("key_ops", None)
        jwk.update({"kid": "idp-1", "alg": "RS256", "use": "sig"})
        config = {
            "port": self.port, "issuer": self.issuer, "jwk": jwk,
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "resources": resources, "ttl_s": TTL_S,
            "actor_issuer": ASSERTION_ISSUER,
            "actor_jwks_url": f"http://{HOST}:{gate_port}/.well-known/jwks.json",
            "connect": connect,
        }
        self.config_path.write_text(json.dumps(config))
        self.proc = spawn_server([NODE, str(IDP_SCRIPT), str(self.config_path)], self.log_path, self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def user_token(self, user: str, agent: str = "support-bot") -> str:
        """The user's login token: what the IdP gives the agent for its user."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": user, "azp": agent, "iat": now, "exp": now + 600}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "idp-1"})

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.issuer}/_stats", timeout=HTTP_TIMEOUT_S).json()

    def mode(self, m: str) -> None:
        r = httpx.post(f"{self.issuer}/_mode", params={"m": m}, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text


def front_door_toml(idp: ExchangeIdP) -> str:
    """`[auth.jwt]` trusting `idp`: users' tokens from it identify calls."""
    return f"""
[auth.jwt]
issuer = {toml_value(idp.issuer)}
audience = {toml_value(AUDIENCE)}
jwks_url = {toml_value(idp.issuer + '/jwks')}
agent_claim = "azp"
"""


def exchange_toml(name: str, url: str, idp: ExchangeIdP, *, token_url: str | None = None,
                  extra: str = "", credential: bool = False) -> str:
    lines = ["[[upstreams]]", f"name = {toml_value(name)}", f"url = {toml_value(url)}", "timeout_ms = 10000"]
    if credential:
        lines += ["[upstreams.credential]", 'value_prefix = "Bearer "', 'file = "files.token"']
    lines += ["[upstreams.identity]", 'mode = "token_exchange"']
    if extra:
        lines.append(extra)
    lines += ["[upstreams.identity.exchange]",
              f"token_url = {toml_value(token_url or idp.issuer + '/token')}",
              f"client_id = {toml_value(CLIENT_ID)}",
              'client_secret_file = "idp.secret"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("token-exchange")
    logs = tmp_path_factory.mktemp("token-exchange-logs")
    crm, files, ghost = (WhoamiProc(n, audience="", header="Authorization") for n in ("crm", "files", "ghost"))
    for w in (crm, files, ghost):
        w.audience = w.url
    idp = ExchangeIdP(work)
    (work / "idp.secret").write_text(CLIENT_SECRET + "\n")
    (work / "files.token").write_text(SERVICE_TOKEN + "\n")
    write_ed25519_key(work / "assertion.pem")
    extra = front_door_toml(idp) + f"""
[identity_assertions]
key_file = "assertion.pem"
issuer = {toml_value(ASSERTION_ISSUER)}

{exchange_toml("crm", crm.url, idp, extra="actor = true")}
{exchange_toml("files", files.url, idp, credential=True, extra='fallback = "credential"')}
{exchange_toml("ghost", ghost.url, idp, token_url=f"http://{HOST}:{free_port()}/token")}
"""
    agents = [Agent("support-bot", list(TOOLS)), Agent("batch-bot", list(TOOLS), act_for_users=True)]
    gate = start_gate(work, [], agents, extra_toml=extra, start=False)
    started: list[Any] = []
    try:
        idp.start([crm.url, files.url, ghost.url], gate.port)
        started.append(idp)
        for w in (crm, files, ghost):
            w.log_path = logs / f"whoami-{w.name}.log"
            w.proc = spawn_server(
                [sys.executable, str(E2E_DIR / "whoami_server.py"), str(w.port), "--jwks-url", f"{idp.issuer}/jwks",
                 "--issuer", idp.issuer, "--audience", w.audience, "--header", "Authorization", "--bearer"],
                w.log_path, w.port)
            started.append(w)
        gate.start()
        yield gate, idp, crm, files
    finally:
        release_gate(gate)
        for p in reversed(started):
            p.stop()


def call(gate: Gate, token: str, tool: str, headers: dict[str, str] | None = None,
         client: httpx.Client | None = None) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": {}})
    h = modern_headers("tools/call", tool, token)
    h.update(headers or {})
    post = client.post if client is not None else httpx.post
    return post(gate.url, json=body, headers=h, timeout=HTTP_TIMEOUT_S)


def answer(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert not result.get("isError"), result
    return json.loads(result["content"][0]["text"])


def records(gate: Gate, tool: str, n: int) -> list[dict[str, Any]]:
    return gate.audit_lines(n, where=lambda r: r.get("tool") == tool and r.get("method") == "tools/call",
                            exact=False)[-n:]


def test_each_user_gets_their_own_token_for_the_upstream_with_the_agent_as_actor(setup):
    gate, idp, crm, _ = setup
    tokens = {u: idp.user_token(u) for u in ("alice", "bob")}

    async def scenario() -> dict[str, Any]:
        seen = {}
        for user, token in tokens.items():
            async with sdk_client_cm(gate.url, token, MODERN_VERSION) as client:
                seen[user] = verdict(await client.call_tool("crm__whoami", {}))
        return seen

    seen = anyio.run(scenario)
    for user, v in seen.items():
        assert v["verified"] is True, v
        claims = v["claims"]
        assert claims["sub"] == user, claims
        assert claims["aud"] == crm.url and claims["iss"] == idp.issuer, claims
        assert claims["act"] == {"sub": "support-bot"}, claims
        assert claims["client_id"] == CLIENT_ID, claims
    calls = crm.calls()
    sent = {c["assertion"] for c in calls}
    assert len(sent) >= 2, calls
    for c in calls:
        assert c["assertion_count"] == 1, c
        assert c["assertion"].removeprefix("Bearer ") not in tokens.values(), "the user's own token went upstream"
    asked = idp.stats()["asked"]
    assert all(a["actor"] and a["resource"] == crm.url for a in asked if a["resource"] == crm.url), asked
    recs = records(gate, "crm__whoami", 2)
    assert {r["user"] for r in recs} == {"alice", "bob"}, recs
    for r in recs:
        assert r["identity"]["mode"] == "token_exchange", r
        assert r["identity"]["token"] in ("exchanged", "cached"), r
        if r["identity"]["token"] == "exchanged":
            assert r["identity"]["jti"], r


def test_an_exchanged_token_is_kept_for_later_calls_of_the_same_user(setup):
    gate, idp, crm, _ = setup
    token = idp.user_token("carol")
    before = idp.stats()["issued"]
    # One keep-alive connection: one shard, one cache.
    with httpx.Client() as client:
        verdicts = [answer(call(gate, token, "crm__whoami", client=client)) for _ in range(4)]
    assert all(v["verified"] and v["sub"] == "carol" for v in verdicts), verdicts
    assert idp.stats()["issued"] - before == 1
    recs = records(gate, "crm__whoami", 4)
    assert [r["identity"]["token"] for r in recs] == ["exchanged", "cached", "cached", "cached"], recs
    assert len({c["assertion"] for c in crm.calls()[-4:]}) == 1


def test_a_token_for_one_upstream_never_reaches_another(setup):
    gate, idp, crm, files = setup
    token = idp.user_token("dave")
    v_crm = answer(call(gate, token, "crm__whoami"))
    v_files = answer(call(gate, token, "files__whoami"))
    assert v_crm["claims"]["aud"] == crm.url and v_files["claims"]["aud"] == files.url
    assert v_crm["sub"] == v_files["sub"] == "dave"
    # files names no actor; its service credential stays off the call the
    # exchanged token replaces (one Authorization header).
    assert "act" not in v_files["claims"], v_files
    last_files = files.calls()[-1]
    assert last_files["assertion_count"] == 1 and SERVICE_TOKEN not in last_files["assertion"], last_files
    crm_tokens = {c["assertion"] for c in crm.calls()}
    assert not crm_tokens & {c["assertion"] for c in files.calls()}


def test_a_call_without_the_users_own_token_is_refused_or_given_the_fallback(setup):
    gate, _, _, files = setup
    bot = gate.agents["batch-bot"]
    r = call(gate, bot.key, "crm__whoami", headers={ON_BEHALF_OF: "erin"})
    assert r.status_code == 403, r.text
    assert "user's own token" in r.json()["error"]["message"], r.text
    rec = records(gate, "crm__whoami", 1)[0]
    assert (rec["reason"], rec["user"], rec["identity"]["token"]) == ("user_token_required", "erin", "failed"), rec
    # files falls back to its service credential.
    v = answer(call(gate, bot.key, "files__whoami", headers={ON_BEHALF_OF: "erin"}))
    assert v["verified"] is False, v
    assert files.calls()[-1]["assertion"] == f"Bearer {SERVICE_TOKEN}"
    rec = records(gate, "files__whoami", 1)[0]
    assert rec["identity"]["token"] == "fallback" and rec["reason"] != "token_exchange_failed", rec


@pytest.mark.parametrize("mode, why", [("refuse", "invalid_grant"), ("garbage", "not JSON"),
                                       ("slow", "timed out"), ("wrong_audience", "another audience")])
def test_an_idp_that_refuses_answers_garbage_is_slow_or_scopes_elsewhere_refuses_the_call(setup, mode, why):
    gate, idp, crm, _ = setup
    user = f"frank-{mode}"
    sent_before = len(crm.calls())
    idp.mode(mode)
    try:
        started = time.monotonic()
        r = call(gate, idp.user_token(user), "crm__whoami")
        took = time.monotonic() - started
    finally:
        idp.mode("ok")
    assert r.status_code == 502, r.text
    assert "could not be exchanged" in r.json()["error"]["message"], r.text
    assert why in r.json()["error"]["message"], r.text
    assert took < SLOW_CALL_BOUND_S, took
    assert len(crm.calls()) == sent_before, "nothing is sent when the exchange fails"
    rec = records(gate, "crm__whoami", 1)[0]
    assert (rec["reason"], rec["user"], rec["status"]) == ("token_exchange_failed", user, 502), rec
    assert rec["identity"]["token"] == "failed" and why in rec["identity"]["error"], rec
    # The IdP is back: the same user's next call is exchanged.
    assert answer(call(gate, idp.user_token(user), "crm__whoami"))["sub"] == user


def test_an_idp_that_is_down_refuses_the_call(setup):
    gate, idp, _, _ = setup
    r = call(gate, idp.user_token("grace"), "ghost__whoami")
    assert r.status_code == 502, r.text
    rec = records(gate, "ghost__whoami", 1)[0]
    assert rec["reason"] == "token_exchange_failed" and "token endpoint" in rec["identity"]["error"], rec


def test_no_user_or_exchanged_token_leaks_into_logs_records_or_metrics(setup):
    gate, idp, crm, files = setup
    token = idp.user_token("heidi")
    answer(call(gate, token, "crm__whoami"))
    answer(call(gate, token, "files__whoami"))
    exchanged = [c["assertion"].removeprefix("Bearer ") for c in crm.calls() + files.calls()
                 if c["assertion"] and c["assertion"] != f"Bearer {SERVICE_TOKEN}"]
    assert exchanged
    time.sleep(0.5)
    audit = "\n".join(json.dumps(r) for r in gate.read_audit())
    metrics = httpx.get(f"{gate.base}/metrics", timeout=HTTP_TIMEOUT_S).text
    for where, text in (("audit", audit), ("stderr", gate.stderr_text()), ("metrics", metrics)):
        assert token not in text and token.split(".")[2] not in text, where
        assert CLIENT_SECRET not in text and SERVICE_TOKEN not in text, where
        for t in exchanged:
            assert t.split(".")[2] not in text, where


def test_check_refuses_a_token_exchange_without_its_endpoint(tmp_path):
    from harness import TOOLGATE_BIN
    cfg = tmp_path / "toolgate.toml"
    cfg.write_text(f"""
[server]
listen = "{HOST}:{free_port()}"
[audit]
dir = "audit"
[[upstreams]]
name = "crm"
url = "http://{HOST}:9/mcp"
[upstreams.identity]
mode = "token_exchange"
""")
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "needs `[upstreams.identity.exchange]`" in r.stderr, r.stderr


def test_an_upstream_written_through_the_admin_api_exchanges_the_users_token_too(setup, tmp_path):
    """`identity` in an `upstreams/{name}` document: the same exchange as a
    configured upstream's, its client secret read from where the document
    says (never shown); a connected account is refused there."""
    from harness import new_api_key, wait_for_port
    from test_admin_api import Admin

    _, idp, _, files = setup
    admin_port = free_port()
    token, sha = new_api_key()
    (tmp_path / "idp.secret").write_text(CLIENT_SECRET + "\n")
    extra = front_door_toml(idp) + f"""
[admin]
listen = "{HOST}:{admin_port}"
[[admin.tokens]]
name = "ops"
token_sha256 = "{sha}"
"""
    gate = start_gate(tmp_path, [], [Agent("support-bot", [])], extra_toml=extra)
    wait_for_port(admin_port, 30, gate.proc)
    admin = Admin(admin_port, token)
    try:
        doc = {"url": files.url, "prefix": "stored", "identity": {
            "mode": "token_exchange",
            "exchange": {"token_url": idp.issuer + "/token", "client_id": CLIENT_ID,
                         "client_secret_file": "idp.secret"}}}
        r = admin.put("upstreams/stored", doc)
        assert r.status_code == 200, r.text
        shown = admin.get("upstreams/stored").json()["spec"]["identity"]
        assert shown["exchange"]["client_secret_file"] == "idp.secret" and CLIENT_SECRET not in json.dumps(shown)
        r = admin.put("agents/support-bot", {"tools": ["stored__whoami"]}, admin.version("agents/support-bot"))
        assert r.status_code == 200, r.text
        user = idp.user_token("judy")
        deadline = time.monotonic() + 15
        while True:
            r = call(gate, user, "stored__whoami")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        v = answer(r)
        assert v["verified"] and v["sub"] == "judy" and v["claims"]["aud"] == files.url, v
        rec = records(gate, "stored__whoami", 1)[0]
        assert rec["identity"]["mode"] == "token_exchange" and rec["identity"]["token"] == "exchanged", rec
        refused = admin.put("upstreams/accounts", {"url": files.url, "identity": {"mode": "connected_account"}})
        assert refused.status_code in (400, 422), refused.text
        assert "configuration file" in refused.text, refused.text
    finally:
        admin.close()
        release_gate(gate)
