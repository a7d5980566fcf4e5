"""Sub-tokens: minted by ``toolgate token mint`` for one agent, narrowed to a
user, tools and an expiry; revoked at run time by ``toolgate token revoke``
while the official MCP SDK client keeps calling.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import httpx
import pytest

from conftest import release_gate, start_gate, upstream_cfgs
from harness import (
    HTTP_TIMEOUT_S,
    TOOLGATE_BIN,
    UNAUTHORIZED,
    Agent,
    assert_jsonrpc_error,
    modern_headers,
    modern_request,
    sdk_client_cm,
)

LOOKUP = "crm__lookup_customer"
TICKET = "tickets__create_ticket"


@pytest.fixture(scope="module")
def gate(tmp_path_factory, upstreams):
    agents = [Agent("support-bot", [LOOKUP, TICKET]), Agent("billing-bot", ["crm__delete_record"])]
    extra = "[auth.subtokens]\nmax_ttl_s = 86400\n"
    g = start_gate(tmp_path_factory.mktemp("subtokens"), upstream_cfgs(upstreams), agents, extra_toml=extra)
    yield g
    release_gate(g)


def token_cli(gate, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOLGATE_BIN), "token", *args, "-c", str(gate.config_path)],
                          capture_output=True, text=True, timeout=30)


def mint(gate, *args: str) -> tuple[str, str]:
    r = token_cli(gate, "mint", *args)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    jti = r.stderr.split("id: ")[1].split()[0]
    return token, jti


def call(gate, token: str, tool: str = LOOKUP, headers: dict | None = None) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": {"customer_id": "C-1", "title": "t"}})
    h = modern_headers("tools/call", tool, token)
    h.update(headers or {})
    return httpx.post(gate.url, json=body, headers=h, timeout=HTTP_TIMEOUT_S)


def test_narrowed_token_lists_and_calls_only_its_tools(gate):
    token, _ = mint(gate, "--agent", "support-bot", "--tool", LOOKUP, "--ttl", "10m")
    assert token.startswith("tgs_")

    async def run():
        async with sdk_client_cm(gate.url, token, "auto") as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            res = await client.call_tool(LOOKUP, {"customer_id": "C-1"})
            return listed, res

    listed, res = asyncio.run(run())
    assert listed == [LOOKUP]
    assert not res.is_error
    # The agent has the ticket tool; the token does not.
    before = gate.audit_len()
    r = call(gate, token, TICKET)
    assert r.status_code != 200 or "error" in r.json(), r.text
    [rec] = gate.audit_after(before)
    assert rec["agent"] == "support-bot" and rec["decision"] == "deny" and rec["tool"] == TICKET
    # An unnarrowed token has every tool of its agent.
    full, _ = mint(gate, "--agent", "support-bot")
    assert call(gate, full, TICKET).status_code == 200


def test_user_narrowed_token_names_the_user(gate):
    token, _ = mint(gate, "--agent", "support-bot", "--user", "alice", "--tool", LOOKUP)
    before = gate.audit_len()
    assert call(gate, token).status_code == 200
    [rec] = gate.audit_after(before)
    assert rec["user"] == "alice"
    r = call(gate, token, headers={"Toolgate-On-Behalf-Of": "bob"})
    assert r.status_code in (400, 403), r.text


def test_bad_tokens_are_refused_with_their_reason(gate):
    token, _ = mint(gate, "--agent", "support-bot", "--ttl", "1s")
    payload, mac = token.rsplit(".", 1)
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    before = gate.audit_len()
    assert_jsonrpc_error(call(gate, tampered), 401, UNAUTHORIZED)
    [rec] = gate.audit_after(before)
    assert rec["reason"] == "token_bad_signature"
    time.sleep(2.1)
    before = gate.audit_len()
    assert_jsonrpc_error(call(gate, token), 401, UNAUTHORIZED)
    [rec] = gate.audit_after(before)
    assert rec["reason"] == "token_expired"
    # Tokens never reach the audit trail or the gateway's log.
    audit_text = "\n".join(str(r) for r in gate.read_audit())
    assert token not in audit_text and tampered not in audit_text
    assert token not in gate.stderr_text()


def test_mint_refuses_to_widen_or_outlive(gate):
    r = token_cli(gate, "mint", "--agent", "support-bot", "--tool", "crm__delete_record")
    assert r.returncode != 0 and "cannot widen" in r.stderr
    r = token_cli(gate, "mint", "--agent", "support-bot", "--ttl", "2d")
    assert r.returncode != 0 and "max_ttl_s" in r.stderr
    r = token_cli(gate, "mint", "--agent", "nobody")
    assert r.returncode != 0 and "no agent" in r.stderr
    r = token_cli(gate, "revoke", "00ff00ff")
    assert r.returncode != 0 and "no minted token" in r.stderr


def test_revoke_under_load_stops_every_call_within_a_second(gate):
    token, jti = mint(gate, "--agent", "support-bot", "--tool", LOOKUP)
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def loop():
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
            body = modern_request("tools/call", {"name": LOOKUP, "arguments": {"customer_id": "C-1"}})
            while not stop.is_set():
                r = http.post(gate.url, json=body, headers=modern_headers("tools/call", LOOKUP, token))
                results.append((time.monotonic(), r.status_code))

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    # The gateway may apply the revocation while the CLI is still running:
    # only calls answered before the CLI started must all have succeeded.
    revoke_started = time.monotonic()
    r = token_cli(gate, "revoke", jti)
    revoked_at = time.monotonic()
    assert r.returncode == 0, r.stderr
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join()
    before = [s for t, s in results if t < revoke_started]
    assert before and all(s == 200 for s in before), before[-5:]
    refused = [t for t, s in results if t >= revoked_at and s == 401]
    assert refused, "no call was refused after the revoke"
    propagation = min(refused) - revoked_at
    # Nothing succeeds once the revocation has propagated.
    late_ok = [t - revoked_at for t, s in results if t >= revoked_at + 1.0 and s == 200]
    assert not late_ok, f"calls succeeded {late_ok[:3]} s after the revoke"
    assert propagation < 1.0, propagation
    listed = token_cli(gate, "list")
    assert any(l.startswith(jti) and "revoked" in l for l in listed.stdout.splitlines()), listed.stdout
    # Revoking by the token itself is refused as already done.
    again = token_cli(gate, "revoke", token)
    assert again.returncode != 0 and "already revoked" in again.stderr


def test_revoked_token_is_refused_and_audited_as_revoked(gate):
    token, jti = mint(gate, "--agent", "support-bot", "--user", "alice", "--tool", LOOKUP)
    assert call(gate, token).status_code == 200
    r = token_cli(gate, "revoke", jti)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 3
    while call(gate, token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = gate.audit_len()
    r = call(gate, token)
    body = assert_jsonrpc_error(r, 401, UNAUTHORIZED)
    assert "revoked" in body["error"]["message"], body
    [rec] = gate.audit_after(before)
    assert (rec["decision"], rec["reason"], rec["status"]) == ("deny", "token_revoked", 401), rec
    assert token not in "\n".join(str(l) for l in gate.read_audit())
    assert token not in gate.stderr_text()
    # The revocation is of that token alone: a fresh one for the same agent works.
    other, _ = mint(gate, "--agent", "support-bot", "--tool", LOOKUP)
    assert call(gate, other).status_code == 200


@pytest.mark.parametrize("token", [
    "tgs_",                       # the prefix alone
    "tgs_no-mac-at-all",          # no `.mac`
    "tgs_eyJqdGkiOiIwMCJ9.***",   # a MAC that is not base64url
    "tgs_" + "A" * 9000 + ".AA",  # longer than any sub-token may be
])
def test_malformed_token_is_a_401_and_audited(gate, token):
    before = gate.audit_len()
    r = call(gate, token)
    body = assert_jsonrpc_error(r, 401, UNAUTHORIZED)
    assert "malformed" in body["error"]["message"], body
    assert token not in r.text
    [rec] = gate.audit_after(before)
    assert (rec["decision"], rec["reason"], rec["agent"]) == ("deny", "token_malformed", None), rec
    assert token not in gate.stderr_text()
