"""Per-agent rate limits on tools/call: exact across both shards (one
atomic per agent), 429 with Retry-After and a JSON-RPC error, audited;
other agents are unaffected, and the bucket refills at the sustained rate.
"""

from __future__ import annotations

import time

import httpx

from conftest import upstream_cfgs
from harness import HTTP_TIMEOUT_S, Agent, modern_headers, modern_request

TOOL = "crm__lookup_customer"


def test_agent_over_its_limit_gets_429_and_others_do_not(make_gate, upstreams):
    agents = [Agent("support-bot", [TOOL]), Agent("billing-bot", [TOOL])]
    gate = make_gate(agents=agents, start=False)
    text = gate.config_path.read_text().replace(
        'id = "support-bot"', 'id = "support-bot"\nrate_limit = { calls_per_s = 2, burst = 5 }')
    gate.config_path.write_text(text)
    gate.start()
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})

    def burst(agent: str, n: int) -> list[httpx.Response]:
        key = gate.agents[agent].key
        out = []
        # A new connection per call: calls land on both shards.
        for _ in range(n):
            out.append(httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, key),
                                  timeout=HTTP_TIMEOUT_S))
        return out

    before = gate.audit_len()
    rs = burst("support-bot", 12)
    codes = [r.status_code for r in rs]
    assert codes.count(200) in (5, 6), codes  # the burst, plus at most one refill while sending
    limited = [r for r in rs if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"]["message"].startswith("rate limit exceeded")
    recs = gate.audit_after(before, count=12)
    assert sum(1 for r in recs if r["reason"] == "rate_limited") == len(limited)
    # Another agent has its own (unlimited) budget.
    assert all(r.status_code == 200 for r in burst("billing-bot", 10))
    # The bucket refills at 2 calls per second.
    time.sleep(1.1)
    assert [r.status_code for r in burst("support-bot", 1)] == [200]
