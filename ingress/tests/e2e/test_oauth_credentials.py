"""Upstream credentials from an OAuth 2.0 client-credentials grant: toolgate
obtains the access token from a token endpoint (a real HTTP server in the
test), injects it, refreshes it before expiry, withdraws it when it expires
without a refresh (calls refused, other upstreams unaffected), and recovers.
The ``vault`` SDK upstream's ``whoami`` tool echoes the Authorization header
it received.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import release_gate, start_gate, upstream_cfgs
from harness import HOST, HTTP_TIMEOUT_S, TOOLGATE_BIN, Agent, UpstreamCfg, UpstreamProc, modern_headers, modern_request

CLIENT_ID = "toolgate-vault"
CLIENT_SECRET = "cl1ent-s3cret-" + "c4n4ry" * 3


class TokenServer:
    def __init__(self) -> None:
        self.issued = 0
        self.fail = False
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                auth = self.headers.get("Authorization", "")
                outer.requests.append({"form": form, "auth": auth})
                expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if outer.fail:
                    code, body = 503, b'{"error":"temporarily_unavailable"}'
                elif auth != expected or form.get("grant_type") != ["client_credentials"]:
                    code, body = 401, b'{"error":"invalid_client"}'
                else:
                    outer.issued += 1
                    code = 200
                    body = (b'{"access_token":"at-%d","token_type":"Bearer","expires_in":2}' % outer.issued)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/oauth2/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def token_server():
    s = TokenServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    p = UpstreamProc("vault", "json")
    p.start(tmp_path_factory.mktemp("oauth-vault"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gate(tmp_path_factory, upstreams, vault, token_server):
    work = tmp_path_factory.mktemp("oauth-gate")
    (work / "client.secret").write_text(CLIENT_SECRET + "\n")
    oauth = {
        "token_url": token_server.url,
        "client_id": CLIENT_ID,
        "client_secret_file": "client.secret",
        "scope": "tools.read tools.write",
        "resource": vault.url,
    }
    ups = upstream_cfgs(upstreams) + [UpstreamCfg(name="vault", url=vault.url, credential={"oauth": oauth})]
    agent = Agent("support-bot", ["vault__whoami", "crm__lookup_customer"])
    g = start_gate(work, ups, [agent])
    yield g
    release_gate(g)


def whoami(gate) -> httpx.Response:
    agent = gate.agents["support-bot"]
    body = modern_request("tools/call", {"name": "vault__whoami", "arguments": {}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "vault__whoami", agent.key),
                      timeout=HTTP_TIMEOUT_S)


def lookup(gate) -> httpx.Response:
    agent = gate.agents["support-bot"]
    body = modern_request("tools/call", {"name": "crm__lookup_customer", "arguments": {"customer_id": "C-1"}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "crm__lookup_customer", agent.key),
                      timeout=HTTP_TIMEOUT_S)


def seen(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.json()["result"]["content"][0]["text"]


def test_token_is_obtained_injected_and_refreshed(gate, token_server, vault):
    first = seen(whoami(gate))
    assert first.startswith("Bearer at-")
    req = token_server.requests[0]
    assert req["form"]["grant_type"] == ["client_credentials"]
    assert req["form"]["scope"] == ["tools.read tools.write"]
    assert req["form"]["resource"] == [vault.url]
    # Lifetime 2 s: refreshed at 80 %, before it expires.
    time.sleep(2.5)
    second = seen(whoami(gate))
    assert second.startswith("Bearer at-") and second != first


def test_failing_token_endpoint_withdraws_the_expired_token_then_recovers(gate, token_server):
    token_server.fail = True
    try:
        time.sleep(3.0)  # past the current token's expiry
        r = whoami(gate)
        assert r.status_code == 503, r.text
        assert "credential" in r.json()["error"]["message"]
        before = gate.audit_len()
        whoami(gate)
        [rec] = gate.audit_after(before)
        assert rec["reason"] == "upstream_credential_unavailable"
        # Other upstreams are unaffected.
        assert lookup(gate).status_code == 200
    finally:
        token_server.fail = False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and whoami(gate).status_code != 200:
        time.sleep(0.3)
    assert seen(whoami(gate)).startswith("Bearer at-")


def test_client_secret_never_leaks(gate):
    assert CLIENT_SECRET not in gate.stderr_text()
    assert CLIENT_SECRET not in "\n".join(str(r) for r in gate.read_audit())
    assert CLIENT_SECRET not in whoami(gate).text


def test_missing_client_secret_stops_the_start(tmp_path):
    cfg = tmp_path / "toolgate.toml"
    cfg.write_text("""
[[upstreams]]
name = "vault"
url = "http://127.0.0.1:1/mcp"
[upstreams.credential.oauth]
token_url = "http://127.0.0.1:2/token"
client_id = "x"
client_secret_env = "TOOLGATE_TEST_SURELY_UNSET_SECRET"
""")
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "TOOLGATE_TEST_SURELY_UNSET_SECRET" in r.stderr and "vault" in r.stderr, r.stderr
