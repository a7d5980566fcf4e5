"""Progress and cancellation of long calls through toolgate.

The ``tickets`` SDK upstream (upstream_server.py) has ``steps`` (progress
after each step), ``annotate`` (a progress event under a token of its own),
``wait_for_cancel`` (remembers a tag when cancelled) and ``cancelled_tags``.

What is checked:
* an agent that asks for progress (``_meta.progressToken``) and takes an
  event stream gets the upstream's progress as it happens, under its own
  token, then the answer as the stream's last event; one that does not ask
  gets a plain answer; progress under any other token never reaches it;
* a progress message an output rule of the call would act on is relayed
  without its message;
* a handshake-era agent's ``notifications/cancelled`` ends its call at once
  (no answer: an empty event stream, or JSON-RPC -32800 for an agent that
  takes JSON only), on whichever shard runs it, reaches the upstream (its
  tool is cancelled), and the call is recorded as ``cancelled``; another
  agent naming the same id cancels nothing;
* a stateless-era agent cancels by closing its stream: the upstream's tool
  is cancelled and the call recorded as ``cancelled``;
* a request a session's server sends toward the agent's client during a
  call (an elicitation) is refused at once, so the call does not wait for
  its deadline.
"""

from __future__ import annotations

import json
import threading
import time

import anyio
import pytest

from harness import (
    Agent,
    RawConn,
    UpstreamCfg,
    http_request,
    legacy_headers,
    modern_headers,
    modern_request,
    open_session,
    result_json,
    sdk_client_cm,
)
from upstream_server import CARD_NUMBER

REQUEST_CANCELLED = -32800
TOOLS = ["tickets__steps", "tickets__annotate", "tickets__wait_for_cancel", "tickets__cancelled_tags",
         "tickets__ask_user"]


def sse_events(body: bytes) -> list[dict]:
    """The JSON messages of an event-stream body, in order."""
    out = []
    for block in body.decode().split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


def tickets_gate(make_gate, upstreams, agents, protocol=None, extra_toml=""):
    up = UpstreamCfg("tickets", upstreams["tickets"].url, timeout_ms=20000, protocol=protocol)
    return make_gate(upstream_list=[up], agents=agents, extra_toml=extra_toml)


def call_tool(gate, key, name, arguments, id, token=None, accept="application/json, text/event-stream"):
    params = {"name": name, "arguments": arguments}
    body = modern_request("tools/call", params, id=id)
    if token is not None:
        body["params"]["_meta"]["progressToken"] = token
    headers = modern_headers("tools/call", name=name, key=key)
    headers["Accept"] = accept
    return http_request("POST", "/mcp", gate.port, json.dumps(body).encode(), headers)


def cancelled_tags(gate, key) -> list[str]:
    with RawConn(gate.port) as c:
        c.send(call_tool(gate, key, "tickets__cancelled_tags", {}, id=99))
        resp = c.read_response()
    msg = sse_events(resp.body)[-1] if resp.headers.get("content-type", "").startswith("text/event-stream") \
        else resp.json()
    return result_json_from_message(msg)


def result_json_from_message(msg: dict):
    result = msg["result"]
    if result.get("structuredContent"):
        sc = result["structuredContent"]
        return sc.get("result", sc)
    return json.loads(result["content"][0]["text"])


def test_progress_goes_ahead_of_the_answer_under_the_agents_token(make_gate, upstreams):
    agent = Agent("worker", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [agent])

    with RawConn(gate.port) as c:
        c.send(call_tool(gate, agent.key, "tickets__steps", {"count": 3, "delay": 0.05}, id=7, token="tok-7"))
        resp = c.read_response()
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers.get("transfer-encoding") == "chunked"
        events = sse_events(resp.body)
        progress, answer = events[:-1], events[-1]
        assert [p["params"]["progress"] for p in progress] == [1, 2, 3], events
        for i, p in enumerate(progress, 1):
            assert p == {"jsonrpc": "2.0", "method": "notifications/progress",
                         "params": {"progressToken": "tok-7", "progress": i, "total": 3,
                                    "message": f"step {i} of 3"}}, p
        assert answer["id"] == 7 and "done 3" in json.dumps(answer["result"])

        # The same connection serves on: no token, a plain JSON answer.
        c.send(call_tool(gate, agent.key, "tickets__steps", {"count": 2, "delay": 0.01}, id=8))
        resp = c.read_response()
        assert resp.headers["content-type"].startswith("application/json"), resp.headers
        assert resp.json()["id"] == 8

        # `annotate` reports under its own token, never the call's: nothing
        # goes ahead of the answer.
        c.send(call_tool(gate, agent.key, "tickets__annotate", {"text": "x y"}, id=9, token=9))
        resp = c.read_response()
        assert resp.headers["content-type"].startswith("application/json"), resp.headers
        assert resp.json()["id"] == 9

        # An agent taking JSON only gets no stream.
        c.send(call_tool(gate, agent.key, "tickets__steps", {"count": 2, "delay": 0.01}, id=10, token="t",
                         accept="application/json"))
        resp = c.read_response()
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["id"] == 10

    lines = gate.audit_lines(4, where=lambda l: l.get("agent") == "worker")
    assert [l["reason"] for l in lines] == ["attached"] * 4, lines


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_an_sdk_agent_gets_progress_and_a_rule_drops_a_message_it_acts_on(make_gate, upstreams, mode):
    agent = Agent("worker", TOOLS)
    rules = """
[[output_rules]]
name = "cards"
tools = ["tickets__steps"]
detectors = ["card"]
"""
    gate = tickets_gate(make_gate, upstreams, [agent], extra_toml=rules)
    seen: list[tuple] = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    async def scenario():
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, agent.key, mode) as client:
                result = await client.call_tool("tickets__steps", {"count": 2, "delay": 0.05},
                                                progress_callback=on_progress)
                assert result_json(result) == "done 2"
                assert seen == [(1, 2, "step 1 of 2"), (2, 2, "step 2 of 2")], seen
                seen.clear()
                result = await client.call_tool("tickets__steps",
                                                {"count": 1, "delay": 0.01, "note": f" card {CARD_NUMBER}"},
                                                progress_callback=on_progress)
                assert seen == [(1, 1, None)], seen

    anyio.run(scenario)


def start_waiting_call(gate, agent, tag, id, session, seconds=15.0, accept=None):
    """Sends a ``wait_for_cancel`` call in ``session`` on its own connection;
    the returned dict gets ``resp`` and ``elapsed`` when its answer comes."""
    got: dict = {}
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "tickets__wait_for_cancel", "arguments": {"tag": tag, "seconds": seconds}}}
    headers = legacy_headers(agent.key, session=session)
    if accept is not None:
        headers["Accept"] = accept
    req = http_request("POST", "/mcp", gate.port, json.dumps(body).encode(), headers)

    def run():
        started = time.monotonic()
        with RawConn(gate.port, timeout=30) as c:
            c.send(req)
            got["resp"] = c.read_response()
        got["elapsed"] = time.monotonic() - started

    t = threading.Thread(target=run)
    t.start()
    got["thread"] = t
    return got


def send_cancel(gate, key, session, request_id) -> int:
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "user pressed stop"}}
    with RawConn(gate.port) as c:
        c.send(http_request("POST", "/mcp", gate.port, json.dumps(note).encode(), legacy_headers(key, session)))
        return c.read_response().status


@pytest.mark.parametrize("protocol", ["handshake", None])
def test_a_handshake_agents_cancellation_ends_its_call_and_reaches_the_tool(make_gate, upstreams, protocol):
    agent, other = Agent("worker", TOOLS), Agent("other", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [agent, other], protocol=protocol)
    session, other_session = open_session(gate.port, agent.key), open_session(gate.port, other.key)
    run = f"{protocol or 'auto'}-{time.monotonic_ns()}"

    # Several calls, each on its own connection: gates run two shards, so
    # cancellations reach calls on the shard that received them and on
    # the other one.
    calls = {f"{run}-{i}": start_waiting_call(gate, agent, f"{run}-{i}", id=100 + i, session=session)
             for i in range(4)}
    # One from an agent that takes JSON only.
    json_only = start_waiting_call(gate, agent, f"{run}-json", id=150, session=session, accept="application/json")
    # One that another agent names, and that must run to its end.
    kept = start_waiting_call(gate, agent, f"{run}-kept", id=200, session=session, seconds=1.5)
    time.sleep(0.7)
    for i, tag in enumerate(calls):
        assert send_cancel(gate, agent.key, session, 100 + i) == 202
    assert send_cancel(gate, agent.key, session, 150) == 202
    assert send_cancel(gate, other.key, other_session, 200) == 202

    # A cancelled request gets no answer: its event stream ends empty...
    for tag, got in calls.items():
        got["thread"].join(20)
        resp = got["resp"]
        assert got["elapsed"] < 5, f"{tag} answered after {got['elapsed']:.1f}s"
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers
        assert sse_events(resp.body) == [], resp.body
    # ...unless the agent takes JSON only: then the JSON-RPC error says so.
    json_only["thread"].join(20)
    assert json_only["resp"].json()["error"]["code"] == REQUEST_CANCELLED, json_only["resp"].body
    kept["thread"].join(20)
    assert "not cancelled" in json.dumps(kept["resp"].json()["result"])

    lines = gate.audit_lines(6, where=lambda l: l.get("tool") == "tickets__wait_for_cancel")
    reasons = sorted(l["reason"] for l in lines)
    assert reasons == ["attached"] + ["cancelled"] * 5, lines
    for l in lines:
        assert l["decision"] == "allow", l
    assert {l["shard"] for l in gate.read_audit() if l.get("method") == "notifications/cancelled"}, "recorded"

    # The upstream's tools were cancelled too (its own record of them).
    deadline = time.monotonic() + 10
    while True:
        tags = cancelled_tags(gate, agent.key)
        if set(calls) <= set(tags) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(calls) <= set(tags), tags
    assert f"{run}-json" in tags and f"{run}-kept" not in tags


def test_a_stateless_agent_cancels_by_closing_its_stream(make_gate, upstreams):
    agent = Agent("worker", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [agent])
    tag = f"closed-{time.monotonic_ns()}"

    c = RawConn(gate.port, timeout=30)
    started = time.monotonic()
    c.send(call_tool(gate, agent.key, "tickets__steps", {"count": 1, "delay": 0.01}, id=1, token="warm"))
    assert sse_events(c.read_response().body)[-1]["id"] == 1
    # A long call, and the agent walks away (no progress asked: a
    # stateless agent's connection is watched while its call runs).
    body = modern_request("tools/call", {"name": "tickets__wait_for_cancel", "arguments": {"tag": tag, "seconds": 15}},
                          id=2)
    c.send(http_request("POST", "/mcp", gate.port, json.dumps(body).encode(),
                        modern_headers("tools/call", name="tickets__wait_for_cancel", key=agent.key)))
    time.sleep(0.5)
    c.close()

    [line] = gate.audit_lines(1, where=lambda l: l.get("tool") == "tickets__wait_for_cancel", timeout=10)
    assert line["reason"] == "cancelled", line
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while tag not in (tags := cancelled_tags(gate, agent.key)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tag in tags, tags


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_an_sdk_agent_that_abandons_a_call_cancels_it(make_gate, upstreams, mode):
    """The SDK's own cancellation: a notification in the handshake era, a
    closed stream in the stateless era."""
    agent = Agent("worker", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [agent])
    tag = f"sdk-{mode}-{time.monotonic_ns()}"

    async def scenario():
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, agent.key, mode) as client:
                with anyio.move_on_after(1.0) as scope:
                    await client.call_tool("tickets__wait_for_cancel", {"tag": tag, "seconds": 15})
                assert scope.cancelled_caught
                # The client is still served.
                assert result_json(await client.call_tool("tickets__steps", {"count": 1, "delay": 0.01})) == "done 1"

    anyio.run(scenario)
    [line] = gate.audit_lines(1, where=lambda l: l.get("tool") == "tickets__wait_for_cancel", timeout=10)
    assert line["reason"] == "cancelled" and line["decision"] == "allow", line
    deadline = time.monotonic() + 10
    while tag not in (tags := cancelled_tags(gate, agent.key)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tag in tags, tags


def test_a_request_an_upstream_sends_the_agents_client_is_refused_at_once(make_gate, upstreams):
    """A session's server asking the agent's client (an elicitation) during
    a call gets -32601 at once: its tool goes on, and the call is answered
    well within its deadline instead of waiting for it."""
    agent = Agent("worker", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [agent], protocol="handshake")
    started = time.monotonic()
    with RawConn(gate.port) as c:
        c.send(call_tool(gate, agent.key, "tickets__ask_user", {"question": "proceed?"}, id=1))
        msg = c.read_response().json()
    assert time.monotonic() - started < 10, "waited for the call's deadline"
    assert "refused -32601" in json.dumps(msg["result"]), msg
    assert "upstream asked the agent's client during a call" in gate.stderr_text()


def test_an_elicitation_is_relayed_to_the_agent_and_its_answer_back(make_gate, upstreams):
    """A session's server asking the agent's client (an elicitation) during a
    call: relayed to an SDK agent whose client offers elicitation, under an
    id of toolgate's, and the user's answer carried back to the upstream's
    tool; the call's record lists the request, the answer has its own. An
    upstream not allowed to elicit (``client_requests = []``), and an agent
    whose client does not offer it, are refused as before."""
    from mcp import types

    agent = Agent("worker", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [agent], protocol="handshake")
    asked: list = []

    async def on_elicit(context, params):
        asked.append(params)
        return types.ElicitResult(action="accept", content={"ok": True})

    async def scenario():
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, agent.key, "legacy", elicitation_callback=on_elicit) as client:
                # Several at once, so that answers arrive on connections the
                # other shard serves, too.
                async def one(n):
                    result = await client.call_tool("tickets__ask_user", {"question": f"Refund order {n}?"})
                    assert result_json(result) == "answered accept", result

                async with anyio.create_task_group() as tg:
                    for n in range(4):
                        tg.start_soon(one, n)
            # A client that offers no elicitation: the upstream is refused.
            async with sdk_client_cm(gate.url, agent.key, "legacy") as client:
                result = await client.call_tool("tickets__ask_user", {"question": "again?"})
                assert result_json(result).startswith("refused"), result

    anyio.run(scenario)
    assert sorted(p.message for p in asked) == [f"Refund order {n}?" for n in range(4)], asked
    records = gate.audit_lines(9, where=lambda l: l.get("tool") == "tickets__ask_user"
                               or l.get("reason") == "client_answer", timeout=10)
    calls = [r for r in records if r.get("tool") == "tickets__ask_user"]
    assert [c["client_requests"] for c in calls] == 4 * [
        [{"method": "elicitation/create", "outcome": "answered"}]] + [
        [{"method": "elicitation/create", "outcome": "no_capability"}]], calls
    answers = [r for r in records if r.get("reason") == "client_answer"]
    assert len(answers) == 4 and {a["agent"] for a in answers} == {"worker"}, answers
    assert all(a["request_id"].startswith("tg-") for a in answers), answers
    print("call shards", [c["shard"] for c in calls], "answer shards", [(a["shard"], a["request_id"]) for a in answers])

    # An upstream that may not elicit: refused, whatever the client offers.
    up = UpstreamCfg("tickets", upstreams["tickets"].url, timeout_ms=20000, protocol="handshake",
                     client_requests=[])
    closed = make_gate(upstream_list=[up], agents=[agent])
    asked.clear()

    async def refused():
        with anyio.fail_after(60):
            async with sdk_client_cm(closed.url, agent.key, "legacy", elicitation_callback=on_elicit) as client:
                result = await client.call_tool("tickets__ask_user", {"question": "Refund?"})
                assert result_json(result) == "refused -32601", result

    anyio.run(refused)
    assert asked == []


def test_only_the_asking_calls_agent_and_session_can_answer_its_request(make_gate, upstreams):
    """The relayed request's id is toolgate's: an answer under it from
    another agent, or from the same agent's other session, is accepted
    (``202``, recorded) and reaches nothing; the call waits on, and the
    answer from its own session goes through, once."""
    from test_list_changes import read_event

    asker, other = Agent("asker", TOOLS), Agent("other", TOOLS)
    gate = tickets_gate(make_gate, upstreams, [asker, other], protocol="handshake")
    offers = {"elicitation": {}}
    mine = open_session(gate.port, asker.key, offers)
    second = open_session(gate.port, asker.key, offers)
    theirs = open_session(gate.port, other.key, offers)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "tickets__ask_user", "arguments": {"question": "Refund?"}}}

    def answer(key: str, session: str, id: str) -> int:
        reply = {"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"ok": True}}}
        with RawConn(gate.port) as c:
            c.send(http_request("POST", "/mcp", gate.port, json.dumps(reply).encode(), legacy_headers(key, session)))
            return c.read_response().status

    call = RawConn(gate.port, timeout=30)
    try:
        call.send(http_request("POST", "/mcp", gate.port, json.dumps(body).encode(), legacy_headers(asker.key, mine)))
        head = call._read_until(b"\r\n\r\n").decode("latin-1")
        assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head, head
        asked = read_event(call, 10)
        assert asked["method"] == "elicitation/create" and asked["params"]["message"] == "Refund?", asked
        id = asked["id"]
        assert isinstance(id, str) and id.startswith("tg-"), asked
        assert answer(other.key, theirs, id) == 202
        assert answer(asker.key, second, id) == 202
        assert read_event(call, 1.5) is None, "an answer from elsewhere reached the call"
        assert answer(asker.key, mine, id) == 202
        final = read_event(call, 10)
        assert final["id"] == 1 and "answered accept" in json.dumps(final["result"]), final
        assert answer(asker.key, mine, id) == 202, "a second answer is accepted and goes nowhere"
    finally:
        call.close()
    answers = gate.audit_lines(4, where=lambda l: l.get("reason") == "client_answer", timeout=10)
    assert sorted(a["agent"] for a in answers) == ["asker", "asker", "asker", "other"], answers
