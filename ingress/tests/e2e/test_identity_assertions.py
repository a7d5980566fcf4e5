"""Signed end-user identity assertions: for an upstream with
``[upstreams.identity] mode = "assertion"`` toolgate mints a short-lived
EdDSA JWT per ``tools/call`` naming the end user (``sub``) and the agent
(``act.sub``, ``agent``), sends it in a header, and publishes its public
keys at ``/.well-known/jwks.json``.

    agent (SDK client or hand-written HTTP; API key, Toolgate-On-Behalf-Of)
        -> toolgate ([identity_assertions] signing key)
            -> crm    whoami_server.py  (assertion, default header, audience set)
            -> files  whoami_server.py  (assertion, own header, default audience, SSE)
            -> plain  whoami_server.py  (no [upstreams.identity])

Each upstream's ``whoami`` verifies what it received against toolgate's JWKS
the way a real upstream would (PyJWT) and says whom it names; ``GET /_seen``
on the upstream shows the raw headers toolgate sent, so the tests can also
check what was *not* sent and look for the token where it must never be.
Keys are generated here (``cryptography``) and written as PKCS#8 PEM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import release_gate, start_gate
from harness import (
    E2E_DIR,
    HOST,
    HTTP_TIMEOUT_S,
    MODERN_VERSION,
    TOOLGATE_BIN,
    Agent,
    Gate,
    free_port,
    modern_headers,
    modern_request,
    result_json,
    sdk_client_cm,
    spawn_server,
    stop_process,
    toml_value,
)
from test_identity import AUDIENCE as IDP_AUDIENCE
from test_identity import ISSUER as IDP_ISSUER
from test_identity import IdP
from whoami_server import DEFAULT_HEADER, jwks_kids, verify_assertion

WHOAMI_SCRIPT = E2E_DIR / "whoami_server.py"
ISSUER = "https://toolgate.test"
CRM_AUDIENCE = "https://crm.test"
FILES_HEADER = "X-End-User-Assertion"
ON_BEHALF_OF = "Toolgate-On-Behalf-Of"
# Not the default (60), so a token whose exp - iat is 60 shows the setting was ignored.
LIFETIME_S = 120
TOOLS = ["crm__whoami", "crm__echo", "files__whoami", "plain__whoami", "plain__echo"]
JWKS_PATH = "/.well-known/jwks.json"
SCENARIO_TIMEOUT_S = 60
RELOAD_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 30


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


def pkcs8_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_ed25519_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """A fresh Ed25519 key written to ``path`` as PKCS#8 PEM (what
    ``openssl genpkey -algorithm ed25519`` writes)."""
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(pkcs8_pem(key))
    return key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_private(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def x_of(key: ed25519.Ed25519PrivateKey) -> str:
    return b64url(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def expected_kid(key: ed25519.Ed25519PrivateKey) -> str:
    """RFC 7638 thumbprint of the key's public half, spelled out literally
    (required members in lexicographic order, no whitespace)."""
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % x_of(key)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def pem_body(pem: bytes) -> str:
    """The base64 lines of a PEM block (what a leak of it would show)."""
    return "".join(l for l in pem.decode().splitlines() if l and not l.startswith("-----"))


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------


def assertions_toml(key_file: str | None = "assertion.pem", previous: list[str] | None = None,
                    key_env: str | None = None, issuer: str | None = ISSUER,
                    lifetime_s: int | None = LIFETIME_S) -> str:
    lines = ["[identity_assertions]"]
    if key_file is not None:
        lines.append(f"key_file = {toml_value(key_file)}")
    if key_env is not None:
        lines.append(f"key_env = {toml_value(key_env)}")
    if previous is not None:
        lines.append(f"previous_key_files = {toml_value(previous)}")
    if issuer is not None:
        lines.append(f"issuer = {toml_value(issuer)}")
    if lifetime_s is not None:
        lines.append(f"lifetime_s = {lifetime_s}")
    return "\n".join(lines) + "\n"


def upstream_toml(name: str, url: str, identity: dict[str, str] | None = None) -> str:
    """One ``[[upstreams]]`` entry, with ``[upstreams.identity]`` when
    ``identity`` is given (``mode = "assertion"`` plus its keys)."""
    lines = ["[[upstreams]]", f"name = {toml_value(name)}", f"url = {toml_value(url)}", "timeout_ms = 10000"]
    if identity is not None:
        lines += ["[upstreams.identity]", 'mode = "assertion"']
        lines += [f"{k} = {toml_value(v)}" for k, v in identity.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# the whoami upstream
# --------------------------------------------------------------------------


@dataclass
class WhoamiProc:
    """A ``whoami_server.py`` subprocess, started by pid and stopped by it.

    Its port is drawn up front (the gate's config names it); the JWKS URL
    (the gate's) is given at ``start``."""

    name: str
    audience: str
    header: str = DEFAULT_HEADER
    encoding: str = "json"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    def start(self, log_dir: Path, jwks_url: str) -> "WhoamiProc":
        self.log_path = log_dir / f"whoami-{self.name}-{self.port}.log"
        self.proc = spawn_server(
            [sys.executable, str(WHOAMI_SCRIPT), str(self.port), "--jwks-url", jwks_url, "--issuer", ISSUER,
             "--audience", self.audience, "--header", self.header, "--encoding", self.encoding],
            self.log_path, self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def seen(self) -> list[dict[str, Any]]:
        """Every HTTP request toolgate made to this upstream so far, oldest first."""
        r = httpx.get(f"http://{HOST}:{self.port}/_seen", timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        return r.json()["requests"]

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        return [s for s in self.seen()[since:] if "tools/call" in s["rpc"]]


def jwks_url(gate: Gate) -> str:
    return f"{gate.base}{JWKS_PATH}"


def fetch_jwks(gate: Gate) -> dict[str, Any]:
    r = httpx.get(jwks_url(gate), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    return r.json()


def call(gate: Gate, agent: Agent, tool: str, args: dict | None = None, user: str | None = None) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": args or {}})
    headers = modern_headers("tools/call", tool, agent.key)
    if user is not None:
        headers[ON_BEHALF_OF] = user
    return httpx.post(gate.url, json=body, headers=headers, timeout=HTTP_TIMEOUT_S)


def verdict_text(text: str) -> dict[str, Any]:
    v = json.loads(text)
    assert isinstance(v, dict) and "verified" in v, text
    return v


def whoami(gate: Gate, agent: Agent, upstream: str = "crm", user: str | None = None) -> dict[str, Any]:
    """``<upstream>__whoami`` over hand-written HTTP: the upstream's verdict."""
    r = call(gate, agent, f"{upstream}__whoami", user=user)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert not result.get("isError"), result
    return verdict_text(result["content"][0]["text"])


def verdict(result: Any) -> dict[str, Any]:
    """The verdict of an SDK ``call_tool`` of whoami."""
    v = result_json(result)
    return verdict_text(v) if isinstance(v, str) else v


def assert_verified(v: dict[str, Any], *, sub: str, agent: str, customer: str, tool: str = "whoami",
                    audience: str = CRM_AUDIENCE, kid: str | None = None, user: bool) -> None:
    """What every assertion must say: the user (or the agent) and who acts,
    the tool's name on the upstream, iss/aud, the configured lifetime, the
    header toolgate signs with."""
    assert v["verified"] is True, v
    claims, header = v["claims"], v["header"]
    assert (v["sub"], v["agent"], v["customer"], v["tool"]) == (sub, agent, customer, tool), v
    if user:
        assert v["act"] == {"sub": agent}, v
    else:
        assert "act" not in claims, claims
    assert claims["iss"] == ISSUER and claims["aud"] == audience, claims
    assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int), claims
    assert claims["exp"] - claims["iat"] == LIFETIME_S, claims
    assert abs(claims["iat"] - time.time()) < 30, claims
    assert isinstance(v["jti"], str) and v["jti"], v
    assert (header["alg"], header["typ"]) == ("EdDSA", "JWT"), header
    if kid is not None:
        assert v["kid"] == kid, (v["kid"], kid)


def unverified(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------
# the shared gate
# --------------------------------------------------------------------------


@dataclass
class Rig:
    """The module's gate (assertion key ``key``), its three whoami upstreams and agents."""

    gate: Gate
    key: ed25519.Ed25519PrivateKey
    crm: WhoamiProc
    files: WhoamiProc
    plain: WhoamiProc
    assistant: Agent  # may act for end users; its calls are attributed to "acme"
    batch: Agent  # may not name an end user (an IdP's JWT can); its own customer
    metrics_port: int
    idp: IdP  # signs end-user JWTs the gate accepts ([auth.jwt], agent in `azp`)


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("assertion-gate")
    key = write_ed25519_key(work / "assertion.pem")
    crm = WhoamiProc("crm", audience=CRM_AUDIENCE)
    files = WhoamiProc("files", audience="", header=FILES_HEADER, encoding="sse")
    files.audience = files.url  # the default audience: the upstream's url as written
    plain = WhoamiProc("plain", audience=CRM_AUDIENCE)
    metrics_port = free_port()
    idp = IdP()
    (work / "jwks.json").write_text(json.dumps(idp.jwks()))
    extra = "\n".join([
        assertions_toml(),
        f'[auth.jwt]\nissuer = "{IDP_ISSUER}"\naudience = "{IDP_AUDIENCE}"\njwks_file = "jwks.json"\n'
        'agent_claim = "azp"\n',
        upstream_toml("crm", crm.url, {"audience": CRM_AUDIENCE}),
        upstream_toml("files", files.url, {"header": FILES_HEADER}),
        upstream_toml("plain", plain.url),
        f'[metrics]\nlisten = "{HOST}:{metrics_port}"\n',
    ])
    assistant = Agent("assistant-bot", list(TOOLS), act_for_users=True, customer="acme")
    batch = Agent("batch-bot", list(TOOLS))
    gate = start_gate(work, [], [assistant, batch], extra_toml=extra, start=False)
    procs = [crm, files, plain]
    try:
        # The upstreams start first: they fetch the JWKS when a call needs it.
        for p in procs:
            p.start(work, jwks_url(gate))
        gate.start()
        yield Rig(gate, key, crm, files, plain, assistant, batch, metrics_port, idp)
    finally:
        release_gate(gate)
        for p in procs:
            p.stop()


# --------------------------------------------------------------------------
# a. end users through the SDK
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
def test_each_end_user_gets_their_own_verified_assertion(rig, mode):
    """Two end users through the same agent (the official SDK client,
    ``Toolgate-On-Behalf-Of``): the upstream verifies each call's token
    against the JWKS and finds that call's user as ``sub``, the agent as
    ``act.sub``, the tool's upstream name, a fresh ``jti`` -- never the other
    user. Every tools/call carries exactly one bare token; the handshake and
    tools/list toolgate sends upstream carry none."""
    bot, gate = rig.assistant, rig.gate
    before = len(rig.crm.seen())
    got: dict[str, list[dict[str, Any]]] = {"alice": [], "bob": []}

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            for user in ("alice", "bob"):
                async with sdk_client_cm(gate.url, bot.key, mode, headers={ON_BEHALF_OF: user}) as client:
                    for _ in range(2):
                        got[user].append(verdict(await client.call_tool("crm__whoami", {})))
                    echoed = await client.call_tool("crm__echo", {"text": f"hello {user}"})
                    assert result_json(echoed) == f"hello {user}"

    anyio.run(scenario)
    kid = expected_kid(rig.key)
    for user, verdicts in got.items():
        for v in verdicts:
            assert_verified(v, sub=user, agent="assistant-bot", customer="acme", kid=kid, user=True)
    assert {v["sub"] for v in got["alice"]} == {"alice"}
    assert {v["sub"] for v in got["bob"]} == {"bob"}
    jtis = [v["jti"] for vs in got.values() for v in vs]
    assert len(set(jtis)) == len(jtis) == 4, jtis

    # What reached the upstream: one token on each of the six calls, the
    # echo calls' naming their own tool and user.
    calls = rig.crm.calls(before)
    assert [c["tools"] for c in calls] == [["whoami"], ["whoami"], ["echo"]] * 2, calls
    for c, user in zip(calls, ["alice"] * 3 + ["bob"] * 3):
        assert c["assertion_count"] == 1, c
        token = c["assertion"]
        assert not token.lower().startswith("bearer"), token
        claims = unverified(token)
        assert (claims["sub"], claims["act"], claims["tool"]) == (user, {"sub": "assistant-bot"}, c["tools"][0])
    tokens = [c["assertion"] for c in calls]
    assert len(set(tokens)) == len(tokens), "a token was sent twice"
    assert {unverified(t)["jti"] for t in tokens[0:2] + tokens[3:5]} == set(jtis)

    # Not on the handshake or discovery (toolgate listed this upstream's
    # tools when it started, before any of the calls above).
    others = [s for s in rig.crm.seen() if "tools/call" not in s["rpc"]]
    assert any("tools/list" in s["rpc"] for s in others), others
    assert all(s["assertion"] is None for s in others), [s for s in others if s["assertion"]]


# --------------------------------------------------------------------------
# b. no end user
# --------------------------------------------------------------------------


def test_call_without_an_end_user_names_the_agent(rig):
    """No end user behind the call: ``sub`` is the agent and there is no
    ``act`` -- for an agent that may act for users but names none, and for
    one that may not."""
    kid = expected_kid(rig.key)
    v = whoami(rig.gate, rig.batch)
    assert_verified(v, sub="batch-bot", agent="batch-bot", customer="batch-bot", kid=kid, user=False)
    v = whoami(rig.gate, rig.assistant)
    assert_verified(v, sub="assistant-bot", agent="assistant-bot", customer="acme", kid=kid, user=False)
    # ...and with a user the same agent's next call names them again.
    v = whoami(rig.gate, rig.assistant, user="carol")
    assert_verified(v, sub="carol", agent="assistant-bot", customer="acme", kid=kid, user=True)


def test_end_user_from_a_jwt(rig):
    """The end user of a call authenticated by an IdP's JWT (``sub`` the
    user, ``azp`` the agent) is the assertion's ``sub``; the IdP's token
    itself never reaches the upstream."""
    token = rig.idp.token("EdDSA", agent="batch-bot", sub="grace")
    before = len(rig.crm.seen())
    body = modern_request("tools/call", {"name": "crm__whoami", "arguments": {}})
    r = httpx.post(rig.gate.url, json=body, headers=modern_headers("tools/call", "crm__whoami", token),
                   timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    v = verdict_text(r.json()["result"]["content"][0]["text"])
    assert_verified(v, sub="grace", agent="batch-bot", customer="batch-bot", kid=expected_kid(rig.key), user=True)
    [c] = rig.crm.calls(before)
    assert token not in json.dumps(c) and token.split(".")[2] not in json.dumps(c), "the IdP's token reached crm"


# --------------------------------------------------------------------------
# c. the JWKS; which upstreams get a token
# --------------------------------------------------------------------------


def test_jwks_publishes_the_configured_key_without_authentication(rig):
    r = httpx.get(jwks_url(rig.gate), timeout=HTTP_TIMEOUT_S)  # no Authorization
    assert r.status_code == 200, r.text
    ctype = r.headers.get("content-type", "").split(";")[0].strip()
    assert ctype in ("application/json", "application/jwk-set+json"), ctype
    keys = r.json()["keys"]
    assert len(keys) == 1, keys
    [k] = keys
    expected = {"kty": "OKP", "crv": "Ed25519", "x": x_of(rig.key), "kid": expected_kid(rig.key), "alg": "EdDSA",
                "use": "sig"}
    assert {f: k.get(f) for f in expected} == expected, k
    assert "d" not in k, "the JWKS publishes the private key"
    assert b64url(raw_private(rig.key)) not in r.text, "the JWKS publishes the private key"


def test_custom_header_default_audience_and_no_token_without_identity(rig):
    """``files`` names its own header and no audience (so the audience is
    its URL as written); ``plain`` has no ``[upstreams.identity]`` and gets
    no token at all. No upstream ever sees the agent's key."""
    kid = expected_kid(rig.key)
    files_before, plain_before = len(rig.files.seen()), len(rig.plain.seen())

    v = whoami(rig.gate, rig.assistant, upstream="files", user="dora")
    assert_verified(v, sub="dora", agent="assistant-bot", customer="acme", audience=rig.files.url, kid=kid,
                    user=True)
    [c] = rig.files.calls(files_before)
    assert c["assertion_count"] == 1 and c["assertion"], c
    assert DEFAULT_HEADER.lower() not in c["headers"], "the default header was sent besides the configured one"

    v = whoami(rig.gate, rig.assistant, upstream="plain", user="dora")
    assert v["verified"] is False and "missing" in v["error"], v
    r = call(rig.gate, rig.batch, "plain__echo", {"text": "plain"})
    assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "plain", r.text
    plain_calls = rig.plain.calls(plain_before)
    assert len(plain_calls) == 2, plain_calls
    for s in rig.plain.seen():
        assert DEFAULT_HEADER.lower() not in s["headers"] and FILES_HEADER.lower() not in s["headers"], s
        for value in s["headers"].values():
            assert value.count(".") != 2 or not value.startswith("eyJ"), f"a JWT-looking header reached plain: {s}"

    keys = [a.key for a in (rig.assistant, rig.batch)]
    for up in (rig.crm, rig.files, rig.plain):
        text = json.dumps(up.seen())
        assert not any(k in text for k in keys), f"an agent's key reached {up.name}"


# --------------------------------------------------------------------------
# d. audit; the token leaks nowhere
# --------------------------------------------------------------------------


def test_audit_records_the_jti_and_the_token_appears_nowhere(rig):
    gate = rig.gate
    before = gate.audit_len()
    seen_before = len(rig.crm.seen())
    v = whoami(gate, rig.assistant, user="erin")
    assert v["verified"] is True, v
    [rec] = gate.audit_after(before)
    assert (rec["method"], rec["tool"], rec["upstream"], rec["user"], rec["agent"]) == (
        "tools/call", "crm__whoami", "crm", "erin", "assistant-bot"), rec
    assert rec["identity"] == {"mode": "assertion", "jti": v["jti"]}, rec
    [c] = rig.crm.calls(seen_before)
    assert unverified(c["assertion"])["jti"] == v["jti"]

    # A call to an upstream without [upstreams.identity]: no identity field (as with session, verdict).
    before = gate.audit_len()
    assert whoami(gate, rig.assistant, upstream="plain", user="erin")["verified"] is False
    [rec] = gate.audit_after(before)
    assert rec["upstream"] == "plain" and "identity" not in rec, rec

    # Every token any upstream received (this test's and the earlier ones'):
    # not in the audit dir, toolgate's log or its metrics -- not even the signature.
    tokens = [c["assertion"] for up in (rig.crm, rig.files) for c in up.calls() if c["assertion"]]
    assert tokens
    time.sleep(0.3)
    audit_text = "\n".join(p.read_text(errors="replace") for p in sorted(gate.audit_dir.rglob("*")) if p.is_file())
    assert audit_text.strip(), "nothing in the audit dir"
    metrics = httpx.get(f"http://{HOST}:{rig.metrics_port}/metrics", timeout=HTTP_TIMEOUT_S).text
    for where, text in (("audit", audit_text), ("log", gate.stderr_text()), ("metrics", metrics)):
        for token in tokens:
            assert token not in text, f"a token is in the {where}"
            assert token.split(".")[2] not in text, f"a token's signature is in the {where}"


# --------------------------------------------------------------------------
# e. rotation
# --------------------------------------------------------------------------


def test_key_rotation_with_previous_keys_and_sighup(tmp_path):
    """``previous_key_files`` keep old public halves in the JWKS (current
    first) while only the current key signs. Swapping the files in the config
    and sending SIGHUP makes new tokens carry the new kid; the old key stays
    published, so tokens minted before the swap still verify."""
    work = tmp_path / "gate"
    work.mkdir()
    k0 = write_ed25519_key(work / "k0.pem")
    k1 = write_ed25519_key(work / "k1.pem")
    k2 = write_ed25519_key(work / "k2.pem")
    crm = WhoamiProc("crm", audience=CRM_AUDIENCE)
    agent = Agent("assistant-bot", ["crm__whoami"], act_for_users=True)

    def config(current: str, previous: list[str]) -> str:
        return assertions_toml(key_file=current, previous=previous) + "\n" + upstream_toml(
            "crm", crm.url, {"audience": CRM_AUDIENCE})

    gate = start_gate(work, [], [agent], extra_toml=config("k1.pem", ["k0.pem"]), start=False)
    try:
        crm.start(tmp_path, jwks_url(gate))
        gate.start()
        assert jwks_kids(fetch_jwks(gate)) == [expected_kid(k1), expected_kid(k0)]
        v = whoami(gate, agent, user="frank")
        assert_verified(v, sub="frank", agent="assistant-bot", customer="assistant-bot", kid=expected_kid(k1),
                        user=True)
        [before_swap] = crm.calls()
        old_token = before_swap["assertion"]

        gate.extra_toml = config("k2.pem", ["k1.pem"])
        gate.config_path.write_text(gate.render_config())
        gate.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        kids = jwks_kids(fetch_jwks(gate))
        while kids[:1] != [expected_kid(k2)] and time.monotonic() < deadline:
            time.sleep(0.1)
            kids = jwks_kids(fetch_jwks(gate))
        assert kids == [expected_kid(k2), expected_kid(k1)], (kids, gate.stderr_text()[-3000:])
        assert gate.alive()

        # New tokens: the new kid (the upstream fetches the JWKS again for it).
        v = whoami(gate, agent, user="frank")
        assert_verified(v, sub="frank", agent="assistant-bot", customer="assistant-bot", kid=expected_kid(k2),
                        user=True)
        # The token minted before the swap still verifies against the JWKS published after it.
        head, claims = verify_assertion(old_token, fetch_jwks(gate), ISSUER, CRM_AUDIENCE)
        assert head["kid"] == expected_kid(k1) and claims["sub"] == "frank"
    finally:
        release_gate(gate)
        crm.stop()


def test_key_from_the_environment_is_published_and_signs(tmp_path, upstreams, monkeypatch):
    """``key_env``: the PEM text in an environment variable instead of a file."""
    key = ed25519.Ed25519PrivateKey.generate()
    monkeypatch.setenv("TOOLGATE_TEST_ASSERTION_KEY", pkcs8_pem(key).decode())
    extra = assertions_toml(key_file=None, key_env="TOOLGATE_TEST_ASSERTION_KEY") + "\n" + upstream_toml(
        "crm", upstreams["crm"].url, {"audience": CRM_AUDIENCE})
    agent = Agent("support-bot", ["crm__lookup_customer"])
    gate = start_gate(tmp_path / "gate", [], [agent], extra_toml=extra)
    try:
        assert jwks_kids(fetch_jwks(gate)) == [expected_kid(key)]
        r = call(gate, agent, "crm__lookup_customer", {"customer_id": "C-5"})
        assert r.status_code == 200, r.text
        log = gate.stderr_text()
        assert "PRIVATE KEY" not in log and pem_body(pkcs8_pem(key)) not in log
        assert b64url(raw_private(key)) not in log and raw_private(key).hex() not in log
    finally:
        release_gate(gate)


# --------------------------------------------------------------------------
# f. configuration errors
# --------------------------------------------------------------------------


def check(workdir: Path, extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``toolgate check`` on a config with one identity upstream and ``extra``."""
    gate = Gate(workdir, [], [Agent("assistant-bot", ["crm__whoami"], act_for_users=True)],
                extra_toml=extra + "\n" + upstream_toml("crm", "http://127.0.0.1:9101/mcp", {"audience": CRM_AUDIENCE}))
    return subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(gate.config_path)], capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("lifetime_s", [1, 3600])
def test_check_accepts_a_good_assertion_config(tmp_path, lifetime_s):
    write_ed25519_key(tmp_path / "assertion.pem")
    write_ed25519_key(tmp_path / "old.pem")
    r = check(tmp_path, assertions_toml(previous=["old.pem"], lifetime_s=lifetime_s))
    assert r.returncode == 0, f"stdout={r.stdout!r} stderr={r.stderr!r}"


def test_identity_upstream_without_identity_assertions_is_refused(tmp_path):
    r = check(tmp_path, "")
    assert r.returncode != 0, f"accepted: stderr={r.stderr!r}"
    assert "identity_assertions" in r.stderr, r.stderr


def _not_ed25519_pkcs8(kind: str) -> bytes | None:
    if kind == "garbage":
        return b"this is not a key\n"
    if kind == "rsa":
        return pkcs8_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if kind == "p256":
        return pkcs8_pem(ec.generate_private_key(ec.SECP256R1()))
    ed = ed25519.Ed25519PrivateKey.generate()
    if kind == "ed25519_public":
        return ed.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if kind == "ed25519_openssh":
        return ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    if kind == "truncated":
        return pkcs8_pem(ed)[:60]
    assert kind == "missing", kind
    return None


@pytest.mark.parametrize("which", ["key_file", "previous_key_files"])
@pytest.mark.parametrize("kind", ["garbage", "rsa", "p256", "ed25519_public", "ed25519_openssh", "truncated",
                                  "missing"])
def test_key_file_that_is_not_an_ed25519_pkcs8_key_is_refused_naming_it(tmp_path, which, kind):
    bad_name = f"bad-{kind}.pem"
    content = _not_ed25519_pkcs8(kind)
    if content is not None:
        (tmp_path / bad_name).write_bytes(content)
    if which == "key_file":
        extra = assertions_toml(key_file=bad_name)
    else:
        write_ed25519_key(tmp_path / "assertion.pem")
        extra = assertions_toml(previous=[bad_name])
    r = check(tmp_path, extra)
    assert r.returncode != 0, f"accepted: stderr={r.stderr!r}"
    assert bad_name in r.stderr, r.stderr
    if content is not None and content.startswith(b"-----"):
        assert pem_body(content) not in r.stderr + r.stdout, "the key's content was printed"


@pytest.mark.parametrize("case", ["both", "neither", "lifetime_0", "lifetime_3601", "env_garbage", "env_unset"])
def test_check_refuses_bad_identity_assertions(tmp_path, case):
    write_ed25519_key(tmp_path / "assertion.pem")
    var = "TOOLGATE_TEST_ASSERTION_KEY_" + case.upper()
    good_pem = pkcs8_pem(ed25519.Ed25519PrivateKey.generate()).decode()
    extra, env, names = {
        "both": (assertions_toml(key_env=var), {var: good_pem}, ["key_file", "key_env"]),
        "neither": (assertions_toml(key_file=None), {}, ["key_file", "key_env"]),
        "lifetime_0": (assertions_toml(lifetime_s=0), {}, ["lifetime_s"]),
        "lifetime_3601": (assertions_toml(lifetime_s=3601), {}, ["lifetime_s"]),
        "env_garbage": (assertions_toml(key_file=None, key_env=var), {var: "not a key"}, [var]),
        "env_unset": (assertions_toml(key_file=None, key_env=var), {}, [var]),
    }[case]
    assert var not in os.environ
    r = check(tmp_path, extra, env)
    assert r.returncode != 0, f"{case}: accepted; stderr={r.stderr!r}"
    assert any(n in r.stderr for n in names), (case, r.stderr)
    assert pem_body(good_pem.encode()) not in r.stderr + r.stdout, "the key's content was printed"


def test_the_demo_crm_sees_the_end_user_it_was_called_for(tmp_path):
    """The command ``toolgate demo`` prints for ``crm__whoami``, run as
    printed: the demo CRM checks the signed assertion and names alice."""
    from harness import Demo

    with Demo(tmp_path) as demo:
        lines = demo.output().splitlines()
        at = next(i for i, l in enumerate(lines) if l.startswith("Ask the CRM whom it was called for"))
        command = lines[at + 1].rstrip("\\").strip() + " " + lines[at + 2].strip()
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        text = json.loads(out.stdout)["result"]["content"][0]["text"]
        assert text == "called for alice by support-bot (assertion verified)", text
        jwks = httpx.get(f"{demo.url}/.well-known/jwks.json", timeout=5.0).json()
        assert [k["crv"] for k in jwks["keys"]] == ["Ed25519"]
