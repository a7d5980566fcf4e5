"""Agents are told when their lists change.

A handshake-era agent opens ``GET /mcp`` in its session; a stateless-era
agent sends ``subscriptions/listen``. When the configuration is reloaded
with a tool attached to one agent, that agent's stream carries
``notifications/tools/list_changed`` (with its subscription's id in the
stateless era, after the acknowledgment), and another agent whose lists
did not change hears nothing. The stream's opening is recorded.
"""

from __future__ import annotations

import json
import signal
import socket
import time

from harness import (
    Agent,
    RawConn,
    UpstreamCfg,
    http_request,
    initialize_request,
    legacy_headers,
    modern_headers,
    modern_request,
    open_session,
)

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"


def read_event(conn: RawConn, timeout: float) -> dict | None:
    """The next message on a chunked event stream (heartbeats skipped), or
    None if none comes within ``timeout``."""
    conn.sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            size = int(conn._read_until(b"\r\n").split(b";")[0], 16)
            assert size > 0, "the stream ended"
            chunk = conn._read_exact(size)
            conn._read_exact(2)
            data = [line[5:].strip() for line in chunk.decode().splitlines() if line.startswith("data:")]
            if data:
                return json.loads("\n".join(data))
    except socket.timeout:
        return None
    return None


def open_session_listing(gate, key) -> str:
    """A session, after checking that `initialize` offers list changes."""
    with RawConn(gate.port) as c:
        c.send(http_request("POST", "/mcp", gate.port, json.dumps(initialize_request()).encode(),
                            legacy_headers(key)))
        caps = json.loads(c.read_response().body)["result"]["capabilities"]
    assert caps["tools"]["listChanged"] is True and caps["prompts"]["listChanged"] is True, caps
    return open_session(gate.port, key)


def open_get_stream(gate, key, session) -> RawConn:
    c = RawConn(gate.port, timeout=10)
    headers = legacy_headers(key, session)
    headers["Accept"] = "text/event-stream"
    del headers["Content-Type"]
    c.send(http_request("GET", "/mcp", gate.port, b"", headers))
    head = c._read_until(b"\r\n\r\n").decode("latin-1")
    assert head.startswith("HTTP/1.1 200"), head
    assert "text/event-stream" in head and "chunked" in head.lower(), head
    return c


def reload_with(gate, agent: Agent, tools: list[str]) -> None:
    agent.tools = tools
    gate.config_path.write_text(gate.render_config())
    gate.proc.send_signal(signal.SIGHUP)


def test_a_session_stream_tells_only_the_agent_whose_tools_changed(make_gate, upstreams):
    worker, other = Agent("worker", ["tickets__steps"]), Agent("other", ["tickets__annotate"])
    gate = make_gate(upstream_list=[UpstreamCfg("tickets", upstreams["tickets"].url)], agents=[worker, other])
    w = open_get_stream(gate, worker.key, open_session_listing(gate, worker.key))
    o = open_get_stream(gate, other.key, open_session(gate.port, other.key))
    try:
        assert read_event(w, 0.5) is None, "nothing has changed yet"
        reload_with(gate, worker, ["tickets__steps", "tickets__annotate"])
        event = read_event(w, 10)
        assert event == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, event
        assert read_event(o, 1.5) is None, "the other agent's lists did not change"
    finally:
        w.close()
        o.close()

    # Without a session, GET stays refused (the stateless era has no GET stream).
    with RawConn(gate.port) as c:
        c.send(http_request("GET", "/mcp", gate.port, b"",
                            {"Authorization": f"Bearer {worker.key}", "Accept": "text/event-stream"}))
        assert c.read_response().status == 405

    opened = gate.audit_lines(2, where=lambda l: l.get("method") is None and l["status"] == 200, exact=False)
    assert {l["agent"] for l in opened} == {"worker", "other"}, opened


def test_a_stateless_subscription_is_acknowledged_and_announces_changes(make_gate, upstreams):
    worker = Agent("worker", ["tickets__steps"])
    gate = make_gate(upstream_list=[UpstreamCfg("tickets", upstreams["tickets"].url)], agents=[worker])
    body = modern_request("subscriptions/listen",
                          {"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["x://y"]}},
                          id="sub-1")
    c = RawConn(gate.port, timeout=10)
    try:
        c.send(http_request("POST", "/mcp", gate.port, json.dumps(body).encode(),
                            modern_headers("subscriptions/listen", key=worker.key)))
        head = c._read_until(b"\r\n\r\n").decode("latin-1")
        assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head, head
        ack = read_event(c, 5)
        assert ack == {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                       "params": {"_meta": {SUBSCRIPTION_ID: "sub-1"},
                                  "notifications": {"toolsListChanged": True}}}, ack

        # A prompt list change is not asked for: only the tools change is told.
        reload_with(gate, worker, ["tickets__steps", "tickets__annotate"])
        event = read_event(c, 10)
        assert event == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                         "params": {"_meta": {SUBSCRIPTION_ID: "sub-1"}}}, event
    finally:
        c.close()
    [line] = gate.audit_lines(1, where=lambda l: l.get("method") == "subscriptions/listen")
    assert (line["decision"], line["status"], line["reason"]) == ("allow", 200, "answered"), line
