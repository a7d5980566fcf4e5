"""Upstream failures as seen by an agent going through toolgate.

* an upstream that stops accepting connections -> HTTP 502, JSON-RPC -32603,
  and the message must not reveal the upstream's URL;
* an upstream slower than its ``timeout_ms``  -> HTTP 504, JSON-RPC -32603;
* an upstream answering garbage (not HTTP, or HTTP without a JSON-RPC body,
  an answer for another id, a 10 GB claimed Content-Length, a reset in the
  middle of the body, malformed SSE) -> HTTP 502, JSON-RPC -32603; a body
  that stalls halfway -> HTTP 504 at the call's deadline;
* a slow upstream holding every pooled connection -> each call its 504, and
  the other upstreams' calls answered as fast as before.

Each failure must come back within a bounded time, be audited as an allowed
call whose outcome is ``failure``, and leave the gate serving other traffic.
The failing upstream is a :class:`harness.FlakyUpstream` proxy in front of
the real ``crm`` SDK server: it relays normally until the gate has fetched
its tool catalog, then is switched into the failure under test.
"""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from conftest import upstream_cfgs
from harness import (
    CARD_NUMBER,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    Agent,
    BlackHoleServer,
    FlakyUpstream,
    GarbageServer,
    UpstreamCfg,
    check_audit_line_shape,
    free_port,
    initialize_request,
    legacy_headers,
    modern_headers,
    modern_request,
    parse_body,
    result_json,
    sdk_client_cm,
)

TIMEOUT_MS = 500
# Upper bound for an upstream failure to be reported to the agent.
FAILURE_DEADLINE_S = 5.0

BASE_TOOLS = ["crm__lookup_customer", "tickets__create_ticket", "tickets__slow"]


@pytest.fixture
def flaky(upstreams):
    proxy = FlakyUpstream(upstreams["crm"].url)
    yield proxy
    proxy.close()


def ops_agent(*extra_upstreams: str) -> Agent:
    """``ops-bot``: attached to the SDK upstreams' tools plus ``lookup_customer``
    of each extra (failing) upstream configured in the same gate."""
    return Agent("ops-bot", BASE_TOOLS + [f"{u}__lookup_customer" for u in extra_upstreams])


def call(http: httpx.Client, gate, agent: Agent, name: str, args: dict, id="c") -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = http.post(gate.url, json=modern_request("tools/call", {"name": name, "arguments": args}, id=id),
                  headers=modern_headers("tools/call", name, key=agent.key))
    return r, time.monotonic() - started


def assert_gateway_error(r: httpx.Response, status: int, secrets: list[str] = ()) -> dict:
    desc = f"-> {r.status_code} {r.headers} {r.text[:500]!r}"
    assert r.status_code == status, desc
    assert r.headers.get("content-type", "").startswith("application/json"), desc
    body = r.json()
    assert body.get("jsonrpc") == "2.0" and isinstance(body.get("error"), dict), desc
    assert body["error"]["code"] == INTERNAL_ERROR, desc
    for s in secrets:
        assert s not in r.text, f"upstream address {s!r} leaked to the agent: {desc}"
    return body


def assert_still_serving(http: httpx.Client, gate, agent: Agent) -> None:
    r, _ = call(http, gate, agent, "crm__lookup_customer", {"customer_id": "still-here"}, id="ok")
    assert r.status_code == 200, r.text
    assert json.loads(parse_body(r)["result"]["content"][0]["text"])["card"] == CARD_NUMBER
    r, _ = call(http, gate, agent, "tickets__create_ticket", {"title": "ok", "priority": 1}, id="ok2")
    assert r.status_code == 200, r.text
    assert gate.alive(), gate.stderr_text()


def failure_line(gate, tool: str, status: int, count: int = 1) -> dict:
    lines = gate.audit_lines(count, where=lambda l: l["tool"] == tool and l["status"] == status)
    line = lines[-1]
    check_audit_line_shape(line)
    assert line["decision"] == "allow", line
    assert line["outcome"] == "failure", line
    assert line["agent"] == "ops-bot", line
    assert line["error_code"] == INTERNAL_ERROR, line
    return line


# --------------------------------------------------------------------------
# timeout
# --------------------------------------------------------------------------


def test_upstream_timeout_is_504(make_gate, upstreams):
    ops = ops_agent()
    gate = make_gate(
        upstream_list=upstream_cfgs(upstreams, tickets={"timeout_ms": TIMEOUT_MS}),
        agents=[ops],
    )
    with httpx.Client(timeout=30) as http:
        # under the limit: fine
        r, _ = call(http, gate, ops, "tickets__slow", {"seconds": 0.05}, id="fast")
        assert r.status_code == 200, r.text
        assert parse_body(r)["result"]["content"][0]["text"].startswith("slept")

        r, elapsed = call(http, gate, ops, "tickets__slow", {"seconds": 4}, id="slow")
        assert_gateway_error(r, 504, [upstreams["tickets"].url, f"127.0.0.1:{upstreams['tickets'].port}"])
        assert r.json()["id"] == "slow"
        assert TIMEOUT_MS / 1000 * 0.8 <= elapsed < 3.0, f"504 after {elapsed:.2f}s, timeout_ms={TIMEOUT_MS}"

        assert_still_serving(http, gate, ops)

    line = failure_line(gate, "tickets__slow", 504)
    assert line["upstream"] == "tickets", line
    assert line["request_id"] == "slow", line


def test_a_slow_upstream_holding_every_connection_does_not_slow_the_others(make_gate, upstreams):
    """40 calls at once to a tool slower than its upstream's deadline, through
    a pool of 2 idle connections per shard: each gets its 504 within the
    deadline and is audited, while calls to the other upstream, made during
    the whole stall, keep answering fast."""
    from concurrent.futures import ThreadPoolExecutor

    ops = ops_agent()
    gate = make_gate(
        upstream_list=upstream_cfgs(upstreams, tickets={"timeout_ms": 1500, "pool_size": 2}),
        agents=[ops],
    )
    stalled = 40

    def slow(i: int) -> tuple[int, float]:
        with httpx.Client(timeout=30) as http:
            r, elapsed = call(http, gate, ops, "tickets__slow", {"seconds": 5}, id=f"slow-{i}")
            return r.status_code, elapsed

    with ThreadPoolExecutor(max_workers=stalled) as pool:
        futures = [pool.submit(slow, i) for i in range(stalled)]
        time.sleep(0.3)  # the stall is under way
        others: list[float] = []
        with httpx.Client(timeout=10) as http:
            while not all(f.done() for f in futures):
                r, elapsed = call(http, gate, ops, "crm__lookup_customer", {"customer_id": "C-1"}, id="other")
                assert r.status_code == 200, r.text
                others.append(elapsed)
        results = [f.result() for f in futures]
    assert [status for status, _ in results] == [504] * stalled, results
    assert max(elapsed for _, elapsed in results) < 1.5 + FAILURE_DEADLINE_S, results
    assert len(others) >= 5, others
    others.sort()
    # The other upstream's calls are not queued behind the stalled ones.
    assert others[len(others) // 2] < 0.25 and others[-1] < 2.0, others
    lines = gate.audit_lines(stalled, where=lambda l: l["tool"] == "tickets__slow" and l["status"] == 504)
    assert len(lines) == stalled
    assert {l["request_id"] for l in lines} == {f"slow-{i}" for i in range(stalled)}


def test_upstream_timeout_with_sdk_client(make_gate, upstreams):
    ops = ops_agent()
    gate = make_gate(upstream_list=upstream_cfgs(upstreams, tickets={"timeout_ms": TIMEOUT_MS}), agents=[ops])

    async def scenario():
        with anyio.fail_after(60):
            for mode in ("legacy", "2026-07-28"):
                async with sdk_client_cm(gate.url, ops.key, mode) as client:
                    started = time.monotonic()
                    with pytest.raises(MCPError) as info:
                        await client.call_tool("tickets__slow", {"seconds": 4})
                    assert info.value.code == INTERNAL_ERROR, info.value.message
                    assert time.monotonic() - started < 3.0
                    r = await client.call_tool("tickets__create_ticket", {"title": "after", "priority": 2})
                    assert result_json(r)["status"] == "open"

    anyio.run(scenario)
    failure_line(gate, "tickets__slow", 504, count=2)


# --------------------------------------------------------------------------
# refused connections
# --------------------------------------------------------------------------


def test_upstream_going_down_is_502(make_gate, upstreams, flaky):
    ops = ops_agent("flaky")
    gate = make_gate(
        upstream_list=upstream_cfgs(upstreams) + [UpstreamCfg("flaky", flaky.url, timeout_ms=3000)],
        agents=[ops],
    )
    with httpx.Client(timeout=30) as http:
        # a handshake session opened while the upstream is healthy
        r = http.post(gate.url, json=initialize_request(), headers=legacy_headers(ops.key))
        assert r.status_code == 200, r.text
        session = legacy_headers(ops.key, session=r.headers["mcp-session-id"],
                                 version=parse_body(r)["result"]["protocolVersion"])
        http.post(gate.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)

        r, _ = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "F-1"}, id="before")
        assert r.status_code == 200, r.text
        assert json.loads(parse_body(r)["result"]["content"][0]["text"])["id"] == "F-1"

        flaky.go_down()
        secrets = [flaky.url, f"127.0.0.1:{flaky.port}", f":{flaky.port}"]

        r, elapsed = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "F-2"}, id="down1")
        body = assert_gateway_error(r, 502, secrets)
        assert body["id"] == "down1"
        assert "unavailable" in body["error"]["message"].lower(), body
        assert elapsed < FAILURE_DEADLINE_S, elapsed

        # again (no cached connection left to fail differently), and through the handshake era
        r, elapsed = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "F-3"}, id="down2")
        assert_gateway_error(r, 502, secrets)
        assert elapsed < FAILURE_DEADLINE_S, elapsed
        started = time.monotonic()
        r = http.post(gate.url, json={"jsonrpc": "2.0", "id": "down3", "method": "tools/call",
                                      "params": {"name": "flaky__lookup_customer",
                                                 "arguments": {"customer_id": "F-4"}}}, headers=session)
        assert r.status_code == 502, r.text
        assert time.monotonic() - started < FAILURE_DEADLINE_S
        assert parse_body(r)["error"]["code"] == INTERNAL_ERROR
        for s in secrets:
            assert s not in r.text

        assert_still_serving(http, gate, ops)

    line = failure_line(gate, "flaky__lookup_customer", 502, count=3)
    assert line["upstream"] == "flaky", line


def test_unreachable_upstreams_at_startup_do_not_block_readiness(make_gate, upstreams):
    ops = ops_agent("down", "junk")
    garbage = GarbageServer()
    try:
        down_port = free_port()
        started = time.monotonic()
        gate = make_gate(
            upstream_list=upstream_cfgs(upstreams) + [
                UpstreamCfg("down", f"http://127.0.0.1:{down_port}/mcp", timeout_ms=1000),
                UpstreamCfg("junk", garbage.url, timeout_ms=1000),
            ],
            agents=[ops],
        )
        assert time.monotonic() - started < 15
        with httpx.Client(timeout=FAILURE_DEADLINE_S + 5) as http:
            r = http.post(gate.url, json=modern_request("tools/list"), headers=modern_headers("tools/list",
                                                                                                key=ops.key))
            assert r.status_code == 200, r.text
            names = {t["name"] for t in parse_body(r)["result"]["tools"]}
            # only attached tools whose upstream catalog is known
            assert names == {"crm__lookup_customer", "tickets__create_ticket", "tickets__slow"}, names

            for tool, url in (("down__lookup_customer", f"127.0.0.1:{down_port}"),
                              ("junk__lookup_customer", f"127.0.0.1:{garbage.port}")):
                r, elapsed = call(http, gate, ops, tool, {"customer_id": "x"}, id=tool)
                assert elapsed < FAILURE_DEADLINE_S, (tool, elapsed)
                # the tool is not in any known catalog: refused as unknown, or
                # reported as an unavailable upstream -- never a hang or a crash
                assert r.status_code in (400, 502), (tool, r.status_code, r.text)
                code = r.json()["error"]["code"]
                assert code == (INVALID_PARAMS if r.status_code == 400 else INTERNAL_ERROR), r.text
                assert url not in r.text, r.text

            assert_still_serving(http, gate, ops)
    finally:
        garbage.close()


# --------------------------------------------------------------------------
# garbage answers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode,status", [
    ("garbage", 502), ("not_json", 502), ("bad_json", 502), ("not_rpc", 502), ("wrong_id", 502),
    ("cut_after_id", 502), ("huge_length", 502), ("reset_mid_body", 502), ("bad_sse", 502),
    # headers and half a body, then silence: the call's deadline (3 s) ends it
    ("stall_body", 504),
])
def test_upstream_answering_garbage_fails_the_call_cleanly(make_gate, upstreams, flaky, mode, status):
    ops = ops_agent("flaky")
    gate = make_gate(
        upstream_list=upstream_cfgs(upstreams) + [UpstreamCfg("flaky", flaky.url, timeout_ms=3000)],
        agents=[ops],
    )
    with httpx.Client(timeout=30) as http:
        r, _ = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "G-1"}, id="before")
        assert r.status_code == 200, r.text

        flaky.set_mode(mode)
        seen = len(flaky.requests)
        r, elapsed = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "G-2"}, id="junk")
        body = assert_gateway_error(r, status, [flaky.url, f"127.0.0.1:{flaky.port}"])
        assert body["id"] == "junk"
        assert elapsed < FAILURE_DEADLINE_S, elapsed
        assert any(m == mode for m, _, _ in flaky.requests[seen:]), "the failing call never reached the upstream"

        # back to normal: the upstream is usable again
        flaky.set_mode("forward")
        deadline = time.monotonic() + FAILURE_DEADLINE_S
        while True:
            r, _ = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "G-3"}, id="after")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert json.loads(parse_body(r)["result"]["content"][0]["text"])["id"] == "G-3"

        assert_still_serving(http, gate, ops)

    line = failure_line(gate, "flaky__lookup_customer", status)
    assert line["upstream"] == "flaky", line
    assert line["request_id"] == "junk", line


def test_a_reply_with_its_id_after_a_large_result_is_relayed(make_gate, upstreams, flaky):
    """The id is matched without parsing the whole reply: one whose ``id``
    comes after its ``result`` is still the answer to its call."""
    ops = ops_agent("flaky")
    gate = make_gate(
        upstream_list=upstream_cfgs(upstreams) + [UpstreamCfg("flaky", flaky.url, timeout_ms=3000)],
        agents=[ops],
    )
    with httpx.Client(timeout=30) as http:
        flaky.set_mode("id_last")
        seen = len(flaky.requests)
        r, _ = call(http, gate, ops, "flaky__lookup_customer", {"customer_id": "L-1"}, id="late-id")
        assert r.status_code == 200, r.text
        body = parse_body(r)
        assert body["id"] == "late-id", body
        assert json.loads(body["result"]["content"][0]["text"])["id"] == "L-1"
        assert any(m == "id_last" for m, _, _ in flaky.requests[seen:]), "the call never reached the upstream"


# --------------------------------------------------------------------------
# readiness
# --------------------------------------------------------------------------


def test_readyz_waits_for_every_catalog_fetch(make_gate, upstreams):
    """/readyz is 503 while an upstream's catalog fetch is still pending, and
    turns 200 once that fetch failed (here: timed out) -- /healthz is 200 throughout."""
    hole = BlackHoleServer()
    try:
        ops = ops_agent("hole")
        gate = make_gate(
            upstream_list=upstream_cfgs(upstreams) + [UpstreamCfg("hole", hole.url, timeout_ms=4000)],
            agents=[ops],
            start=False,
        )
        spawned = time.monotonic()
        gate.spawn()
        gate.wait_healthy(10)
        with httpx.Client(timeout=5) as http:
            r = http.get(f"{gate.base}/readyz")
            if time.monotonic() - spawned < 3.5:
                assert r.status_code == 503, (r.status_code, r.text)
        gate.wait_ready(15)
        assert time.monotonic() - spawned >= 3.0, "ready before the pending catalog fetch could have failed"
        with httpx.Client(timeout=30) as http:
            assert_still_serving(http, gate, ops)
    finally:
        hole.close()
