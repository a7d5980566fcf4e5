"""Sessions shared by two toolgate replicas through a real Redis (Debian's
``redis-server``, with a password), with the shipped session policies:
a session's refund count and the labels it touched hold across replicas
and across a restart of one of them; with Redis gone, shared sessions are
unknown to policy and the policies that say so refuse — never an allow on
one replica's partial view.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from harness import HOST, HTTP_TIMEOUT_S, Agent, UpstreamCfg, modern_headers, modern_request
from test_limits_redis import PASSWORD, redis  # noqa: F401  (fixture)
from test_policies_e2e import ops_upstream  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[3]
SESSION_POLICIES = REPO / "policies" / "examples" / "session-policies"
TOOLS = ["crm__lookup_customer", "ops__send_email", "ops__refund"]

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def config(policy_dir: Path, redis_port: int) -> str:
    return f"""
[limits]
backend = "redis"

[limits.redis]
url = "redis://{HOST}:{redis_port}/0"
password = {{ file = "redis.password" }}
timeout_ms = 500

[tool_labels]
"crm__lookup_customer" = ["reads_pii"]
"ops__send_email" = ["external_send"]
"ops__refund" = ["money"]

[sessions]
backend = "redis"
distinct = ["customer_id"]

[policies]
files = ["{policy_dir}"]
"""


def call(gate, key: str, conversation: str, tool: str, args: dict) -> httpx.Response:
    headers = modern_headers("tools/call", tool, key) | {"Toolgate-Conversation": conversation}
    return httpx.post(gate.url, json=modern_request("tools/call", {"name": tool, "arguments": args}),
                      headers=headers, timeout=HTTP_TIMEOUT_S)


def refund(gate, key: str, conversation: str) -> int:
    return call(gate, key, conversation, "ops__refund", {"order_id": "o-1", "amount": 5}).status_code


def test_a_session_is_one_across_replicas_and_a_restart_and_unknown_without_redis(
        make_gate, tmp_path, upstreams, ops_upstream, redis):
    policy_dir = tmp_path / "session-policies"
    # Without the judge rule: this setup has no judge.
    policy_dir.mkdir()
    for f in SESSION_POLICIES.glob("*.cedar"):
        text = f.read_text()
        text = text[:text.find('// After a destructive call')] if "after-destructive" in text else text
        (policy_dir / f.name).write_text(text)
    agent = Agent("assistant", TOOLS)
    ups = [UpstreamCfg("crm", upstreams["crm"].url), UpstreamCfg("ops", ops_upstream.url)]
    a, b = [make_gate(upstream_list=ups, agents=[agent], start=False,
                      extra_toml=config(policy_dir, redis.port)) for _ in range(2)]
    for g in (a, b):
        (g.workdir / "redis.password").write_text(PASSWORD + "\n")
        g.start()
    key = agent.key

    # 1. Refunds of one conversation alternate between the replicas: the
    # sixth is refused wherever it lands.
    conv = f"c-{uuid.uuid4()}"
    assert [refund(g, key, conv) for g in (a, b, a, b, a)] == [200] * 5
    assert refund(b, key, conv) == 403

    # 2. A restart of one replica keeps the session's facts.
    other = f"c-{uuid.uuid4()}"
    assert [refund(a, key, other) for _ in range(3)] == [200] * 3
    assert call(b, key, other, "crm__lookup_customer", {"customer_id": "C-1"}).status_code == 200
    a.stop()
    a.start()
    assert [refund(a, key, other) for _ in range(3)] == [200, 200, 403]
    sent = call(a, key, other, "ops__send_email", {"to": "x@evil.example", "subject": "s"})
    assert sent.status_code == 403, sent.text
    after = [r for r in a.read_audit() if r.get("method") == "tools/call"][-1]
    assert after["policies"] == ["toxic-flow"]
    assert after["session"]["known"] is True
    assert after["session"]["labels"] == ["money", "reads_pii"]
    assert after["session"]["label_calls"] == {"money": 5, "reads_pii": 1}

    # 3. Redis gone: a fresh session is unknown, and the policies that say
    # what unknown means refuse; reads that no policy restricts still pass.
    redis.stop()
    fresh = f"c-{uuid.uuid4()}"
    assert call(a, key, fresh, "ops__send_email", {"to": "ok@example.com", "subject": "s"}).status_code == 403
    assert refund(b, key, fresh) == 403
    assert call(b, key, fresh, "crm__lookup_customer", {"customer_id": "C-2"}).status_code == 200
    unknown = [r for r in a.read_audit() + b.read_audit()
               if r.get("method") == "tools/call" and r.get("session", {}).get("known") is False]
    assert len(unknown) == 3, unknown
    for g in (a, b):
        assert g.alive()
        assert g.stderr_text().count("shared sessions: Redis unreachable") == 1

    # 4. Redis is back (empty: no persistence): with nothing refused calls
    # could record, each replica still reconnects by itself, and a fresh
    # session is known again.
    redis.start()
    for g in (a, b):
        deadline = time.monotonic() + 15
        while "shared sessions are read and recorded again" not in g.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "shared sessions are read and recorded again" in g.stderr_text(), g.stderr_text()
        again = f"c-{uuid.uuid4()}"
        assert call(g, key, again, "ops__send_email", {"to": "ok@example.com", "subject": "s"}).status_code == 200
