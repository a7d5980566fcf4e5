"""JWKS fetched from the IdP's URL: at start, and again when a token names a
key the gateway does not know (the IdP rotated) — rate-limited, so tokens
with random ``kid``s cannot flood the IdP. The IdP is a real HTTP server in
the test serving a JWKS it can change.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from jwt.algorithms import RSAAlgorithm

from conftest import release_gate, start_gate, upstream_cfgs
from harness import HOST, HTTP_TIMEOUT_S, TOOLGATE_BIN, UNAUTHORIZED, Agent, assert_jsonrpc_error, modern_headers, modern_request
from test_identity import AUDIENCE, ISSUER, IdP

TOOL = "crm__lookup_customer"


class JwksServer:
    """Serves ``/jwks`` from a mutable key list; counts fetches."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, object]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.fetches += 1
                keys = []
                for kid, key in outer.keys:
                    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                    jwk["kid"] = kid
                    keys.append(jwk)
                body = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/jwks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def idp():
    return IdP()


@pytest.fixture(scope="module")
def jwks(idp):
    s = JwksServer()
    s.keys = [("rsa-1", idp.rsa)]
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gate(tmp_path_factory, upstreams, jwks):
    extra = f"""
[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_url = "{jwks.url}"
jwks_refetch_min_s = 1
"""
    agents = [Agent("support-bot", [TOOL], keyless=True)]
    g = start_gate(tmp_path_factory.mktemp("jwks-url"), upstream_cfgs(upstreams), agents, extra_toml=extra)
    yield g
    release_gate(g)


def call(gate, token: str) -> httpx.Response:
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, token), timeout=HTTP_TIMEOUT_S)


def test_keys_from_the_url_verify_tokens(gate, jwks, idp):
    assert jwks.fetches >= 1
    r = call(gate, idp.token("RS256"))
    assert r.status_code == 200, r.text


def test_rotated_key_is_fetched_on_unknown_kid_with_a_rate_limit(gate, jwks, idp):
    new_token = idp.token("RS256", kid="rsa-2", key=idp.other)
    before = gate.audit_len()
    assert_jsonrpc_error(call(gate, new_token), 401, UNAUTHORIZED)
    [rec] = gate.audit_after(before)
    assert rec["reason"] == "token_unknown_key"
    # The IdP publishes the new key; the next unknown-kid token pulls it in.
    jwks.keys = [("rsa-1", idp.rsa), ("rsa-2", idp.other)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if call(gate, new_token).status_code == 200:
            break
        time.sleep(0.2)
    assert call(gate, new_token).status_code == 200
    # A flood of tokens with made-up kids fetches at most about once per
    # jwks_refetch_min_s (1 s here), not once per token.
    fetches = jwks.fetches
    started = time.monotonic()
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        for i in range(60):
            token = idp.token("RS256", kid=f"bogus-{i}")
            body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})
            http.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, token))
    elapsed = time.monotonic() - started
    time.sleep(0.3)
    assert jwks.fetches - fetches <= int(elapsed) + 2, (jwks.fetches - fetches, elapsed)
    # Old keys still verify.
    assert call(gate, idp.token("RS256")).status_code == 200


def test_jwks_url_must_not_be_plain_http_off_loopback(tmp_path):
    cfg = tmp_path / "toolgate.toml"
    cfg.write_text(f"""
[[upstreams]]
name = "crm"
url = "http://127.0.0.1:1/mcp"

[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_url = "http://idp.example.com/jwks"
""")
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "line 9" in r.stderr and "https" in r.stderr, r.stderr
