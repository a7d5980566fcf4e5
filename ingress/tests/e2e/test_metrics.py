"""Prometheus metrics on their own listener: counters move with real traffic,
and the agent-facing port does not expose them."""

from __future__ import annotations

import re
import time

import httpx

from harness import HOST, Agent, free_port, modern_headers, modern_request, scrape


def total(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def test_metrics_count_calls_and_stay_off_the_agent_port(make_gate):
    port = free_port()
    agents = [Agent("support-bot", ["crm__lookup_customer"])]
    support = agents[0]
    gate = make_gate(agents=agents, extra_toml=f'[metrics]\nlisten = "{HOST}:{port}"\n')
    before = scrape(port)
    assert before["toolgate_audit_log_ok"] == 1
    with httpx.Client(timeout=10.0) as http:
        for i in range(5):
            body = modern_request("tools/call", {"name": "crm__lookup_customer", "arguments": {"customer_id": f"C-{i}"}}, id=i)
            r = http.post(gate.url, json=body, headers=modern_headers("tools/call", "crm__lookup_customer", support.key))
            assert r.status_code == 200, r.text
        for i in range(3):
            body = modern_request("tools/call", {"name": "crm__delete_record", "arguments": {"record_id": "R"}}, id=i)
            r = http.post(gate.url, json=body, headers=modern_headers("tools/call", "crm__delete_record", support.key))
            assert r.status_code == 400
        assert http.get(f"{gate.base}/metrics").status_code == 404
    deadline = time.monotonic() + 5
    while True:
        after = scrape(port)
        allowed = total(after, 'toolgate_requests_total{') - total(before, 'toolgate_requests_total{')
        if allowed >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    grow = lambda prefix: total(after, prefix) - total(before, prefix)
    assert grow('toolgate_requests_total') == 8
    denied = sum(v for k, v in after.items() if k.startswith("toolgate_requests_total") and 'decision="deny"' in k)
    assert denied == 3
    assert after["toolgate_audit_records_written_total"] >= 8
    # fdatasync latency: a histogram fed by every sync of the log.
    deadline = time.monotonic() + 5
    while after["toolgate_audit_fsync_seconds_count"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = scrape(port)
    count = after["toolgate_audit_fsync_seconds_count"]
    assert count >= 1 and after["toolgate_audit_syncs_total"] >= 1
    buckets = [(float(k.split('le="')[1].rstrip('"}')), v) for k, v in after.items()
               if k.startswith("toolgate_audit_fsync_seconds_bucket") and "+Inf" not in k]
    assert len(buckets) >= 5 and buckets == sorted(buckets), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "cumulative"
    assert after['toolgate_audit_fsync_seconds_bucket{le="+Inf"}'] == count
    assert 0 < after["toolgate_audit_fsync_seconds_sum"] < count * 5
    assert after["toolgate_snapshot_generation"] >= 1
    assert re.search(r'toolgate_connections_open\{shard="\d"\}', " ".join(after))
