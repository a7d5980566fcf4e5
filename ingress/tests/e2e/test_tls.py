"""TLS on the agent listener and toward upstreams, with real certificates.

Certificates are made in the test (``certs.py``, Python ``cryptography``):
one CA for the gateway and its agents, another CA an attacker controls.
The official MCP SDK client talks to toolgate over TLS; client certificates
(mTLS) identify agents by URI SAN (a SPIFFE id), DNS SAN or subject CN; an
SDK upstream served over https is reached with a configured CA, and refused
when its certificate does not chain to it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import time

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs import issue, make_ca, server_cert
from conftest import release_gate, start_gate, upstream_cfgs
from harness import (
    HOST,
    HTTP_TIMEOUT_S,
    TOOLGATE_BIN,
    UNAUTHORIZED,
    Agent,
    UpstreamCfg,
    UpstreamProc,
    assert_jsonrpc_error,
    free_port,
    modern_headers,
    modern_request,
    result_json,
    sdk_client_cm,
)

SPIFFE_SUPPORT = "spiffe://corp.test/agent/support"
FORBIDDEN = -32003
TOOL = "crm__lookup_customer"


class Pki:
    """The test's certificates, written under one directory."""

    def __init__(self, dir) -> None:
        self.dir = dir
        self.ca = make_ca()
        self.ca_pem = dir / "ca.pem"
        self.ca_pem.write_bytes(self.ca.cert.public_bytes(Encoding.PEM))
        self.server = server_cert(self.ca).write(dir, "server")
        self.support = issue(self.ca, "support-client", uris=[SPIFFE_SUPPORT], client=True).write(dir, "support")
        self.dnsbot = issue(self.ca, "x", dns=["dns-bot.agents.test"], client=True).write(dir, "dnsbot")
        self.cnbot = issue(self.ca, "cn-bot", client=True).write(dir, "cnbot")
        self.stranger = issue(self.ca, "stranger", dns=["nobody.agents.test"], client=True).write(dir, "stranger")
        self.rogue_ca = make_ca("rogue CA")
        self.rogue = issue(self.rogue_ca, "rogue", uris=[SPIFFE_SUPPORT], client=True).write(dir, "rogue")

    def ctx(self, client: tuple | None = None, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A client context trusting the test CA, optionally with a client certificate."""
        c = ssl.create_default_context(cafile=str(self.ca_pem))
        if client is not None:
            c.load_cert_chain(str(client[0]), str(client[1]))
        if max_version is not None:
            c.maximum_version = max_version
        return c


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def agents() -> list[Agent]:
    return [
        Agent("support-bot", [TOOL], cert_names=[SPIFFE_SUPPORT]),
        Agent("billing-bot", ["crm__delete_record"]),
        Agent("dns-bot", [TOOL], cert_names=["dns-bot.agents.test"], keyless=True),
        Agent("cn-bot", [TOOL], cert_names=["cn-bot"], keyless=True),
    ]


def tls_toml(pki: Pki, client_auth: str | None, min_version: str = "1.2") -> str:
    lines = [
        "[server.tls]",
        f'cert_file = "{pki.server[0]}"',
        f'key_file = "{pki.server[1]}"',
        f'min_version = "{min_version}"',
    ]
    if client_auth is not None:
        lines += [f'client_ca_file = "{pki.ca_pem}"', f'client_auth = "{client_auth}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def metrics_port():
    return free_port()


@pytest.fixture(scope="module")
def gate(tmp_path_factory, upstreams, pki, metrics_port):
    """TLS listener; client certificates optional (agents may use either)."""
    extra = tls_toml(pki, "optional") + f'\n[metrics]\nlisten = "{HOST}:{metrics_port}"\n'
    g = start_gate(tmp_path_factory.mktemp("tls-gate"), upstream_cfgs(upstreams), agents(), extra_toml=extra,
                   tls_client={"verify": pki.ctx()})
    yield g
    release_gate(g)


def call(gate, ctx: ssl.SSLContext, key: str | None = None, tool: str = TOOL) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": {"customer_id": "C-1"}})
    with httpx.Client(verify=ctx, timeout=HTTP_TIMEOUT_S) as http:
        return http.post(gate.url, json=body, headers=modern_headers("tools/call", tool, key))


def test_sdk_client_calls_a_tool_over_tls(gate, pki):
    support = gate.agents["support-bot"]

    async def run():
        async with sdk_client_cm(gate.url, support.key, "auto", verify=pki.ctx()) as client:
            tools = await client.list_tools()
            assert [t.name for t in tools.tools] == [TOOL]
            res = await client.call_tool(TOOL, {"customer_id": "C-1"})
            assert not res.is_error, res
            return result_json(res)

    before = gate.audit_len()
    out = asyncio.run(run())
    assert out["id"] == "C-1"
    # discover, tools/list, tools/call
    recs = [r for r in gate.audit_after(before, count=3) if r.get("tool") == TOOL]
    assert recs and recs[-1]["agent"] == "support-bot" and recs[-1]["decision"] == "allow"


def test_client_certificate_alone_identifies_the_agent(gate, pki):
    for identity, agent in [(pki.support, "support-bot"), (pki.dnsbot, "dns-bot"), (pki.cnbot, "cn-bot")]:
        before = gate.audit_len()
        r = call(gate, pki.ctx(identity))
        assert r.status_code == 200, r.text
        assert "result" in r.json(), r.text
        [rec] = gate.audit_after(before)
        assert rec["agent"] == agent


def test_token_of_another_agent_on_a_certificate_connection_is_refused(gate, pki):
    billing = gate.agents["billing-bot"]
    before = gate.audit_len()
    r = call(gate, pki.ctx(pki.support), key=billing.key, tool="crm__delete_record")
    body = assert_jsonrpc_error(r, 403, FORBIDDEN)
    assert "client certificate" in body["error"]["message"]
    [rec] = gate.audit_after(before)
    assert rec["decision"] == "deny"
    assert rec["reason"] == "certificate_agent_mismatch"
    assert billing.key not in r.text
    # The same agent's own token on its own certificate is fine.
    ok = call(gate, pki.ctx(pki.support), key=gate.agents["support-bot"].key)
    assert ok.status_code == 200, ok.text


def test_valid_certificate_naming_no_agent_needs_a_token(gate, pki):
    r = call(gate, pki.ctx(pki.stranger))
    assert_jsonrpc_error(r, 401, UNAUTHORIZED)
    ok = call(gate, pki.ctx(pki.stranger), key=gate.agents["support-bot"].key)
    assert ok.status_code == 200, ok.text


def test_certificate_from_another_ca_fails_the_handshake(gate, pki):
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        call(gate, pki.ctx(pki.rogue))


def test_plain_http_on_the_tls_port_gets_a_clear_400(gate):
    r = httpx.get(f"http://{HOST}:{gate.port}/healthz", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400
    assert "TLS" in r.json()["error"]


def test_handshake_garbage_is_dropped_and_counted(gate, pki, metrics_port):
    def failures() -> float:
        text = httpx.get(f"http://{HOST}:{metrics_port}/metrics", timeout=5.0).text
        return sum(float(l.split()[-1]) for l in text.splitlines()
                   if l.startswith("toolgate_tls_handshake_failures_total"))

    before = failures()
    with socket.create_connection((HOST, gate.port), timeout=5.0) as s:
        s.sendall(b"\x16\x03\x01\x00\x05garbagegarbage" * 4)
        s.settimeout(5.0)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        # No HTTP comes back; at most a TLS alert record (content type 21).
        assert data == b"" or data[0] == 21, data[:40]
    deadline = time.monotonic() + 5
    while failures() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failures() >= before + 1
    # The gateway keeps serving.
    assert call(gate, pki.ctx(pki.support)).status_code == 200


def test_required_client_certificates_and_tls13_only(tmp_path, upstreams, pki):
    g = start_gate(tmp_path, upstream_cfgs(upstreams), agents(), extra_toml=tls_toml(pki, "required", "1.3"),
                   tls_client={"verify": pki.ctx(pki.support)})
    try:
        assert call(g, pki.ctx(pki.dnsbot)).status_code == 200
        # No certificate: the handshake (or the first read under TLS 1.3) fails.
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            call(g, pki.ctx(), key=g.agents["support-bot"].key)
        # TLS 1.2 is refused.
        with pytest.raises(httpx.ConnectError):
            call(g, pki.ctx(pki.dnsbot, max_version=ssl.TLSVersion.TLSv1_2))
    finally:
        release_gate(g)


def peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    from cryptography import x509

    with socket.create_connection((HOST, port), timeout=5.0) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_renewed_certificate_is_served_after_reload(tmp_path, upstreams, pki):
    cert, key = server_cert(pki.ca, "first").write(tmp_path, "live")
    extra = f'[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    g = start_gate(tmp_path / "gate", upstream_cfgs(upstreams), [Agent("support-bot", [TOOL])], extra_toml=extra,
                   tls_client={"verify": pki.ctx()})
    try:
        first = peer_serial(g.port, pki.ctx())
        renewed = server_cert(pki.ca, "renewed")
        renewed.write(tmp_path, "live")
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while peer_serial(g.port, pki.ctx()) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert peer_serial(g.port, pki.ctx()) == renewed.cert.serial_number
        # A broken replacement is refused; the renewed certificate stays.
        cert.write_text("garbage")
        g.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert g.alive()
        assert peer_serial(g.port, pki.ctx()) == renewed.cert.serial_number
        assert "server.tls" in g.stderr_text()
    finally:
        release_gate(g)


def test_replaced_certificate_files_are_served_without_a_signal(tmp_path, upstreams, pki):
    """With ``[policies] watch = true`` the certificate and key files are
    watched: replacing both (atomically, as cert-manager or certbot's deploy
    hooks do) reaches new connections within a couple of seconds, no SIGHUP."""
    import os

    cert, key = server_cert(pki.ca, "first").write(tmp_path, "live")
    extra = f'[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n[policies]\nwatch = true\n'
    g = start_gate(tmp_path / "gate", upstream_cfgs(upstreams), [Agent("support-bot", [TOOL])], extra_toml=extra,
                   tls_client={"verify": pki.ctx()})
    try:
        first = peer_serial(g.port, pki.ctx())
        # A different key as well as a different certificate: a reload that
        # took one file without the other would fail the handshake.
        renewed = server_cert(pki.ca, "renewed")
        new_cert, new_key = renewed.write(tmp_path, "next")
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        replaced = time.monotonic()
        serial = first
        while serial == first and time.monotonic() - replaced < 5:
            time.sleep(0.1)
            serial = peer_serial(g.port, pki.ctx())
        took = time.monotonic() - replaced
        assert serial == renewed.cert.serial_number
        assert took < 3.0, took
        assert call(g, pki.ctx(), key=g.agents["support-bot"].key).status_code == 200
    finally:
        release_gate(g)


@pytest.fixture(scope="module")
def tls_vault(tmp_path_factory, pki):
    d = tmp_path_factory.mktemp("tls-vault")
    p = UpstreamProc("vault", "json", tls=server_cert(pki.ca, "vault").write(d, "vault"))
    p.start(d)
    yield p
    p.stop()


def test_https_upstream_verified_against_its_ca(tmp_path, upstreams, pki, tls_vault):
    (tmp_path / "vault.token").write_text("s3cret-upstream-token\n")
    rogue_ca = tmp_path / "rogue-ca.pem"
    rogue_ca.write_bytes(pki.rogue_ca.cert.public_bytes(Encoding.PEM))
    ups = [
        UpstreamCfg(name="vault", url=tls_vault.url, ca_file=str(pki.ca_pem),
                    credential={"value_prefix": "Bearer ", "file": "vault.token"}),
        UpstreamCfg(name="fake", url=tls_vault.url, ca_file=str(rogue_ca)),
    ]
    agent = Agent("support-bot", ["vault__whoami", "fake__whoami"])
    g = start_gate(tmp_path, ups, [agent])
    try:
        body = modern_request("tools/call", {"name": "vault__whoami", "arguments": {}})
        r = httpx.post(g.url, json=body, headers=modern_headers("tools/call", "vault__whoami", agent.key),
                       timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["content"][0]["text"] == "Bearer s3cret-upstream-token"
        # The same server, but trusted through a CA that did not issue its
        # certificate: never reached, and the tool is not even listed.
        body = modern_request("tools/call", {"name": "fake__whoami", "arguments": {}})
        r = httpx.post(g.url, json=body, headers=modern_headers("tools/call", "fake__whoami", agent.key),
                       timeout=HTTP_TIMEOUT_S)
        assert r.status_code != 200 or "error" in r.json(), r.text
        assert "s3cret" not in r.text
        assert "TLS handshake failed" in g.stderr_text()
    finally:
        release_gate(g)


def test_https_upstream_with_a_certificate_for_another_name_is_refused(tmp_path, upstreams, pki, tls_vault):
    """A certificate from the configured CA proves nothing about a host it
    does not name: the upstream at 127.0.0.1 presents one for
    ``vault.other.test`` (with ``127.0.0.1`` as its common name, which
    hostname verification must ignore) and is refused; the same CA with the
    right name works."""
    d = tmp_path / "misnamed"
    d.mkdir()
    misnamed = UpstreamProc("vault", "json", tls=issue(pki.ca, "127.0.0.1", dns=["vault.other.test"]).write(d, "m"))
    misnamed.start(d)
    ups = [
        UpstreamCfg(name="vault", url=tls_vault.url, ca_file=str(pki.ca_pem)),
        UpstreamCfg(name="misnamed", url=misnamed.url, ca_file=str(pki.ca_pem)),
    ]
    agent = Agent("support-bot", ["vault__whoami", "misnamed__whoami"])
    g = start_gate(tmp_path, ups, [agent])
    try:
        def post(tool):
            body = modern_request("tools/call", {"name": tool, "arguments": {}})
            return httpx.post(g.url, json=body, headers=modern_headers("tools/call", tool, agent.key),
                              timeout=HTTP_TIMEOUT_S)

        assert post("vault__whoami").status_code == 200
        before = g.audit_len()
        r = post("misnamed__whoami")
        body = assert_jsonrpc_error(r, 502, -32603)
        assert body["error"]["message"] == "upstream unavailable"
        [rec] = g.audit_after(before)
        assert (rec["upstream"], rec["reason"], rec["outcome"], rec["status"]) == (
            "misnamed", "upstream_unavailable", "failure", 502), rec
        # The log says why, naming the host the certificate does not cover.
        assert 'certificate not valid for name "127.0.0.1"' in g.stderr_text()
        # The other upstream, same CA, is unaffected.
        assert post("vault__whoami").status_code == 200
    finally:
        release_gate(g)
        misnamed.stop()


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "toolgate.toml"
    cfg.write_text(text)
    return subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)


def test_config_errors_name_the_line(tmp_path, pki):
    base = '[[upstreams]]\nname = "crm"\nurl = "http://127.0.0.1:1/mcp"\n'
    # Certificate names without a client CA: never verified, so refused.
    r = check(tmp_path, base + '[[agents]]\nid = "a"\nclient_cert_names = ["x"]\n')
    assert r.returncode != 0
    assert "line 6" in r.stderr and "client_ca_file" in r.stderr, r.stderr
    # An agent with no way to prove itself.
    r = check(tmp_path, base + '[[agents]]\nid = "a"\n')
    assert r.returncode != 0 and "no way to prove itself" in r.stderr, r.stderr
    # ca_file on a plain http upstream.
    r = check(tmp_path, base + f'ca_file = "{pki.ca_pem}"\n')
    assert r.returncode != 0 and "line 4" in r.stderr and "https" in r.stderr, r.stderr
    # A key file that is not a key.
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    r = check(tmp_path, f'[server.tls]\ncert_file = "{pki.server[0]}"\nkey_file = "{bad}"\n' + base)
    assert r.returncode != 0 and "bad.key" in r.stderr, r.stderr
    # A good TLS section passes.
    r = check(tmp_path, tls_toml(pki, "required") + base)
    assert r.returncode == 0, r.stderr


def test_sdk_over_tls_with_a_jwt_user_reaches_cedar_audit_and_only_the_injected_credential_upstream(
    tmp_path, pki, tls_vault
):
    """The whole identity path at once: TLS to the gateway, a JWT naming
    agent and user, Cedar deciding on the user's groups, the audit record
    naming both, and the upstream (over https) seeing only toolgate's own
    credential."""
    import json as _json

    from test_identity import AUDIENCE, ISSUER, IdP

    idp = IdP()
    (tmp_path / "jwks.json").write_text(_json.dumps(idp.jwks()))
    (tmp_path / "vault.token").write_text("injected-" + "c4n4ry" * 3 + "\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "vault.cedar").write_text(
        '@id("whoami-admins")\n'
        'permit(principal == Toolgate::Agent::"support-bot", action == Toolgate::Action::"vault__whoami", resource)\n'
        'when { context has user && context.user in Toolgate::Group::"admins" };\n'
    )
    ups = [UpstreamCfg(name="vault", url=tls_vault.url, ca_file=str(pki.ca_pem),
                       credential={"value_prefix": "Bearer ", "file": "vault.token"})]
    extra = tls_toml(pki, None) + f"""
[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "jwks.json"
groups_claim = "groups"

[policies]
files = ["policies"]
"""
    g = start_gate(tmp_path, ups, [Agent("support-bot", ["vault__whoami"], keyless=True)], extra_toml=extra,
                   tls_client={"verify": pki.ctx()})
    try:
        admin = idp.token("RS256", sub="alice", groups=["admins"])
        plain = idp.token("ES256", sub="bob", groups=["support"])

        async def run(token):
            async with sdk_client_cm(g.url, token, "auto", verify=pki.ctx()) as client:
                return await client.call_tool("vault__whoami", {})

        before = g.audit_len()
        res = asyncio.run(run(admin))
        assert not res.is_error, res
        echoed = res.content[0].text
        assert echoed == "Bearer injected-" + "c4n4ry" * 3
        assert admin not in echoed
        rec = [r for r in g.audit_after(before, count=3) if r.get("tool") == "vault__whoami"][-1]
        assert (rec["agent"], rec["user"], rec["decision"]) == ("support-bot", "alice", "allow")
        assert rec["policies"] == ["whoami-admins"]

        before = g.audit_len()
        with pytest.raises(BaseException, match="Denied by policy|unhandled errors"):
            asyncio.run(run(plain))
        rec = [r for r in g.audit_after(before, count=2) if r.get("tool") == "vault__whoami"][-1]
        assert (rec["agent"], rec["user"], rec["decision"]) == ("support-bot", "bob", "deny")
        assert admin not in g.stderr_text() and plain not in g.stderr_text()
    finally:
        release_gate(g)
