"""End-to-end MCP traffic through toolgate with the official MCP Python SDK.

For each wire era the SDK client speaks (handshake ``legacy``, stateless
``2026-07-28`` and ``auto`` negotiation) the agents see exactly the tools
attached to them, can call those on both upstreams (the JSON one and the SSE
one), and are refused anything else with JSON-RPC -32602 "Unknown tool".
Every call leaves exactly one audit line. The remaining tests drive the same
paths with hand-written HTTP to pin down the wire details.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections import Counter

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from conftest import BILLING_TOOLS, SUPPORT_TOOLS, default_agents, upstream_cfgs
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from harness import (
    CARD_NUMBER,
    HTTP_TIMEOUT_S,
    INVALID_PARAMS,
    MODERN_VERSION,
    SDK_MODES,
    UNAUTHORIZED,
    Agent,
    assert_jsonrpc_error,
    check_audit_line_shape,
    initialize_request,
    legacy_headers,
    modern_headers,
    modern_request,
    new_api_key,
    parse_body,
    result_json,
    sdk_client_cm,
)

SCENARIO_TIMEOUT_S = 90


def is_call(line: dict) -> bool:
    return line["method"] == "tools/call"


async def expect_unknown_tool(client, name: str, args: dict) -> None:
    with pytest.raises(MCPError) as info:
        await client.call_tool(name, args)
    assert info.value.code == INVALID_PARAMS, f"{name}: {info.value.code} {info.value.message}"
    assert info.value.message.startswith("Unknown tool"), f"{name}: {info.value.message!r}"


@pytest.mark.parametrize("mode", SDK_MODES)
def test_sdk_agents_see_and_call_only_attached_tools(make_gate, mode):
    support, billing = default_agents()
    gate = make_gate(agents=[support, billing])

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, support.key, mode) as client:
                if mode == "legacy":
                    assert client.protocol_version != MODERN_VERSION
                else:
                    # toolgate serves server/discover, so auto negotiation lands on the modern era.
                    assert client.protocol_version == MODERN_VERSION

                listing = await client.list_tools()
                assert {t.name for t in listing.tools} == set(SUPPORT_TOOLS)
                schemas = {t.name: t.input_schema for t in listing.tools}
                assert "customer_id" in schemas["crm__lookup_customer"]["properties"]
                assert set(schemas["tickets__create_ticket"]["properties"]) >= {"title", "priority"}

                # JSON upstream
                r = await client.call_tool("crm__lookup_customer", {"customer_id": "C-42"})
                assert not r.is_error, r
                assert result_json(r) == {
                    "id": "C-42",
                    "name": "Customer C-42",
                    "email": "C-42@example.com",
                    "card": CARD_NUMBER,
                }
                # SSE upstream
                r = await client.call_tool("tickets__create_ticket", {"title": "printer on fire", "priority": 2})
                assert not r.is_error, r
                assert result_json(r) == {
                    "ticket_id": "T-2-15",
                    "title": "printer on fire",
                    "priority": 2,
                    "status": "open",
                }

                # exists upstream, attached to the other agent
                await expect_unknown_tool(client, "crm__delete_record", {"record_id": "R-1"})
                await expect_unknown_tool(client, "tickets__close_ticket", {"ticket_id": "T-1"})
                # exists nowhere
                await expect_unknown_tool(client, "crm__no_such_tool", {})

            async with sdk_client_cm(gate.url, billing.key, mode) as client:
                listing = await client.list_tools()
                assert {t.name for t in listing.tools} == set(BILLING_TOOLS)

                r = await client.call_tool("crm__delete_record", {"record_id": "R-7"})
                assert not r.is_error, r
                assert result_json(r) == "deleted R-7"
                r = await client.call_tool("tickets__close_ticket", {"ticket_id": "T-9"})
                assert not r.is_error, r
                assert result_json(r) == "closed T-9"

                await expect_unknown_tool(client, "crm__lookup_customer", {"customer_id": "C-1"})
                await expect_unknown_tool(client, "tickets__create_ticket", {"title": "x", "priority": 1})
                # the bare upstream name is not an exposed name
                await expect_unknown_tool(client, "delete_record", {"record_id": "R-7"})

    anyio.run(scenario)

    lines = gate.audit_lines(10, where=is_call)
    for line in lines:
        check_audit_line_shape(line)
        assert line["request_id"] is not None, line

    allowed = Counter((l["agent"], l["tool"], l["upstream"]) for l in lines if l["decision"] == "allow")
    assert allowed == Counter(
        {
            ("support-bot", "crm__lookup_customer", "crm"): 1,
            ("support-bot", "tickets__create_ticket", "tickets"): 1,
            ("billing-bot", "crm__delete_record", "crm"): 1,
            ("billing-bot", "tickets__close_ticket", "tickets"): 1,
        }
    ), lines
    for line in (l for l in lines if l["decision"] == "allow"):
        assert line["reason"] == "attached", line
        assert line["status"] == 200, line
        assert line["outcome"] == "success", line
        assert line["error_code"] is None, line

    denied = [l for l in lines if l["decision"] == "deny"]
    assert len(denied) == 6, lines
    for line in denied:
        assert line["status"] == 400, line
        assert line["error_code"] == INVALID_PARAMS, line
        assert line["outcome"] == "failure", line
    # tools that exist upstream but are attached to the other agent; the reason
    # recorded for names that exist nowhere is not pinned down here
    exists_upstream = set(SUPPORT_TOOLS) | set(BILLING_TOOLS)
    not_attached = Counter(
        (l["agent"], l["tool"]) for l in denied if l["tool"] in exists_upstream and l["reason"] == "tool_not_attached"
    )
    assert not_attached == Counter(
        {
            ("support-bot", "crm__delete_record"): 1,
            ("support-bot", "tickets__close_ticket"): 1,
            ("billing-bot", "crm__lookup_customer"): 1,
            ("billing-bot", "tickets__create_ticket"): 1,
        }
    ), denied
    assert Counter(l["agent"] for l in denied) == Counter({"support-bot": 3, "billing-bot": 3}), denied

    # tools/list requests are audited as allowed, one agent each
    lists = [l for l in gate.read_audit() if l["method"] == "tools/list"]
    assert {l["agent"] for l in lists} == {"support-bot", "billing-bot"}, lists
    assert all(l["decision"] == "allow" and l["status"] == 200 for l in lists), lists


@pytest.mark.parametrize("mode", SDK_MODES)
def test_sdk_upstream_tool_error_is_passed_through(make_gate, mode):
    support, billing = default_agents()
    gate = make_gate(agents=[support, billing])

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, support.key, mode) as client:
                # priority must be an integer: the upstream rejects the arguments
                try:
                    r = await client.call_tool("tickets__create_ticket", {"title": "x", "priority": "not a number"})
                except MCPError as e:
                    assert e.code != INVALID_PARAMS or not e.message.startswith("Unknown tool"), e.message
                else:
                    assert r.is_error, r
                    assert "priority" in json.dumps([c.model_dump() for c in r.content]), r
                # the same for the JSON upstream
                try:
                    r = await client.call_tool("crm__lookup_customer", {"customer_id": ["not", "a", "string"]})
                except MCPError as e:
                    assert not e.message.startswith("Unknown tool"), e.message
                else:
                    assert r.is_error, r
                # and the gate keeps answering normally on the same connection
                r = await client.call_tool("crm__lookup_customer", {"customer_id": "C-1"})
                assert not r.is_error and result_json(r)["card"] == CARD_NUMBER

    anyio.run(scenario)
    lines = gate.audit_lines(3, where=is_call)
    for line in lines:
        check_audit_line_shape(line)
        assert line["decision"] == "allow" and line["reason"] == "attached", line
        assert line["agent"] == "support-bot", line
    outcomes = Counter(l["outcome"] for l in lines)
    assert outcomes["success"] == 1, lines
    assert outcomes["tool_error"] + outcomes["failure"] == 2, lines
    assert gate.alive()


def assert_unauthorized(r: httpx.Response, request_id) -> None:
    """401 with JSON-RPC -32001 and a Bearer challenge. The id is the request's,
    or null when toolgate refuses before reading the body."""
    body = assert_jsonrpc_error(r, 401, UNAUTHORIZED)
    assert body["id"] in (request_id, None), body
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers


def test_missing_api_key_is_401_and_audited(make_gate):
    gate = make_gate()
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        r = http.post(gate.url, json=modern_request("tools/list", id="nokey-1"), headers=modern_headers("tools/list"))
        assert_unauthorized(r, "nokey-1")
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers
        r = http.post(gate.url, json=initialize_request(id="nokey-2"), headers=legacy_headers())
        assert_unauthorized(r, "nokey-2")
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers
        assert "mcp-session-id" not in r.headers
        r = http.post(
            gate.url,
            json=modern_request("tools/call", {"name": "crm__lookup_customer", "arguments": {"customer_id": "1"}},
                                id="nokey-3"),
            headers=modern_headers("tools/call", "crm__lookup_customer"),
        )
        assert_unauthorized(r, "nokey-3")

    lines = gate.audit_lines(3)
    for line, (rid, method) in zip(sorted(lines, key=lambda l: str(l["request_id"])),
                                   [("nokey-1", "tools/list"), ("nokey-2", "initialize"), ("nokey-3", "tools/call")]):
        check_audit_line_shape(line)
        # the body of an unauthenticated request need not be parsed
        assert line["request_id"] in (rid, None), line
        assert line["method"] in (method, None), line
        assert line["agent"] is None, line
        assert line["decision"] == "deny", line
        assert line["reason"] == "missing_api_key", line
        assert line["status"] == 401, line
        assert line["error_code"] == UNAUTHORIZED, line
        assert line["upstream"] is None, line


def test_unknown_api_key_is_401_and_audited(make_gate):
    gate = make_gate()
    stranger, _ = new_api_key()
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        r = http.post(
            gate.url,
            json=modern_request("tools/call", {"name": "crm__lookup_customer", "arguments": {"customer_id": "1"}},
                                id=77),
            headers=modern_headers("tools/call", "crm__lookup_customer", key=stranger),
        )
        assert_unauthorized(r, 77)
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers
        # the SHA-256 digest itself is not a key
        agent = next(iter(gate.agents.values()))
        r = http.post(gate.url, json=initialize_request(id=78), headers=legacy_headers(key=agent.key_sha256))
        assert_unauthorized(r, 78)
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers

    lines = gate.audit_lines(2)
    for line in lines:
        check_audit_line_shape(line)
        assert line["request_id"] in (77, 78, None), line
        assert line["agent"] is None, line
        assert line["decision"] == "deny", line
        assert line["reason"] == "unknown_api_key", line
        assert line["status"] == 401, line
        assert line["error_code"] == UNAUTHORIZED, line


@pytest.mark.parametrize("mode", SDK_MODES)
def test_sdk_client_with_unknown_key_is_refused(make_gate, mode):
    gate = make_gate()
    stranger, _ = new_api_key()

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            with pytest.raises(Exception):
                async with sdk_client_cm(gate.url, stranger, mode) as client:
                    await client.list_tools()

    anyio.run(scenario)
    assert gate.alive()
    assert all(l["decision"] == "deny" and l["status"] == 401 for l in gate.read_audit())


def test_raw_handshake_session_lifecycle(make_gate):
    support, billing = default_agents()
    gate = make_gate(agents=[support, billing])
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        r = http.post(gate.url, json=initialize_request(id=1), headers=legacy_headers(support.key))
        assert r.status_code == 200, r.text
        init = parse_body(r)
        assert init["id"] == 1 and "result" in init, init
        assert init["result"]["protocolVersion"] in HANDSHAKE_PROTOCOL_VERSIONS, init
        assert "tools" in init["result"]["capabilities"], init
        session = r.headers.get("mcp-session-id")
        assert session, r.headers
        hdrs = legacy_headers(support.key, session=session, version=init["result"]["protocolVersion"])

        r = http.post(gate.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=hdrs)
        assert r.status_code == 202, r.text

        r = http.post(gate.url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=hdrs)
        assert r.status_code == 200, r.text
        assert parse_body(r) == {"jsonrpc": "2.0", "id": 2, "result": {}}

        r = http.post(gate.url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}, headers=hdrs)
        assert r.status_code == 200, r.text
        assert {t["name"] for t in parse_body(r)["result"]["tools"]} == set(SUPPORT_TOOLS)

        r = http.post(
            gate.url,
            json={"jsonrpc": "2.0", "id": "call-4", "method": "tools/call",
                  "params": {"name": "crm__lookup_customer", "arguments": {"customer_id": "C-9"}}},
            headers=hdrs,
        )
        assert r.status_code == 200, r.text
        body = parse_body(r)
        assert body["id"] == "call-4"
        assert body["result"]["isError"] is False
        assert json.loads(body["result"]["content"][0]["text"])["card"] == CARD_NUMBER

        r = http.post(
            gate.url,
            json={"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                  "params": {"name": "crm__delete_record", "arguments": {"record_id": "C-9"}}},
            headers=hdrs,
        )
        assert_jsonrpc_error(r, 400, INVALID_PARAMS, id=5, message_prefix="Unknown tool")

        # In the session, GET opens the stream of list changes; without
        # the session it is refused.
        with http.stream("GET", gate.url, headers={**hdrs, "Accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
        no_session = {k: v for k, v in hdrs.items() if k.lower() != "mcp-session-id"}
        r = http.get(gate.url, headers={**no_session, "Accept": "text/event-stream"})
        assert r.status_code == 405, r.text

        r = http.delete(gate.url, headers=hdrs)
        assert r.status_code == 200, r.text

        r = http.post(gate.url, json={"jsonrpc": "2.0", "id": 6, "method": "tools/list"}, headers=hdrs)
        assert r.status_code == 404, r.text

    calls = gate.audit_lines(2, where=is_call)
    assert {l["request_id"]: (l["agent"], l["decision"], l["reason"], l["status"]) for l in calls} == {
        "call-4": ("support-bot", "allow", "attached", 200),
        5: ("support-bot", "deny", "tool_not_attached", 400),
    }, calls


def test_raw_modern_stateless_requests(make_gate):
    support, billing = default_agents()
    gate = make_gate(agents=[support, billing])
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        r = http.post(gate.url, json=modern_request("server/discover", id=1),
                      headers=modern_headers("server/discover", key=billing.key))
        assert r.status_code == 200, r.text
        disc = parse_body(r)["result"]
        assert MODERN_VERSION in disc["supportedVersions"], disc
        assert "tools" in disc["capabilities"], disc
        assert "mcp-session-id" not in r.headers

        r = http.post(gate.url, json=modern_request("tools/list", id=2),
                      headers=modern_headers("tools/list", key=billing.key))
        assert r.status_code == 200, r.text
        assert {t["name"] for t in parse_body(r)["result"]["tools"]} == set(BILLING_TOOLS)

        for i, (name, args, expected) in enumerate(
            [("crm__delete_record", {"record_id": "R-1"}, "deleted R-1"),
             ("tickets__close_ticket", {"ticket_id": "T-1"}, "closed T-1")]
        ):
            r = http.post(gate.url, json=modern_request("tools/call", {"name": name, "arguments": args}, id=10 + i),
                          headers=modern_headers("tools/call", name, key=billing.key))
            assert r.status_code == 200, r.text
            body = parse_body(r)
            assert body["id"] == 10 + i
            assert body["result"]["content"][0]["text"] == expected, body

        r = http.post(gate.url,
                      json=modern_request("tools/call", {"name": "crm__lookup_customer",
                                                         "arguments": {"customer_id": "1"}}, id=20),
                      headers=modern_headers("tools/call", "crm__lookup_customer", key=billing.key))
        assert_jsonrpc_error(r, 400, INVALID_PARAMS, id=20, message_prefix="Unknown tool")

    calls = gate.audit_lines(3, where=is_call)
    assert {l["request_id"]: (l["agent"], l["tool"], l["decision"]) for l in calls} == {
        10: ("billing-bot", "crm__delete_record", "allow"),
        11: ("billing-bot", "tickets__close_ticket", "allow"),
        20: ("billing-bot", "crm__lookup_customer", "deny"),
    }, calls
    assert {l["request_id"]: l["upstream"] for l in calls if l["decision"] == "allow"} == {
        10: "crm", 11: "tickets"}, calls


def test_prefix_configuration(make_gate, upstreams):
    agent = Agent("prefixed-bot", ["people__lookup_customer", "create_ticket"])
    gate = make_gate(
        upstream_list=upstream_cfgs(upstreams, crm={"prefix": "people"}, tickets={"prefix": ""}),
        agents=[agent],
    )

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, MODERN_VERSION) as client:
                listing = await client.list_tools()
                assert {t.name for t in listing.tools} == {"people__lookup_customer", "create_ticket"}
                r = await client.call_tool("people__lookup_customer", {"customer_id": "P-1"})
                assert result_json(r)["id"] == "P-1"
                r = await client.call_tool("create_ticket", {"title": "abc", "priority": 5})
                assert result_json(r)["ticket_id"] == "T-5-3"
                # the default-prefixed names do not exist in this configuration
                await expect_unknown_tool(client, "crm__lookup_customer", {"customer_id": "P-1"})
                await expect_unknown_tool(client, "tickets__create_ticket", {"title": "abc", "priority": 5})

    anyio.run(scenario)
    calls = gate.audit_lines(4, where=is_call)
    assert sorted((l["tool"], l["upstream"]) for l in calls if l["decision"] == "allow") == [
        ("create_ticket", "tickets"),
        ("people__lookup_customer", "crm"),
    ], calls


def test_concurrent_calls_across_shards(make_gate):
    support, billing = default_agents()
    gate = make_gate(agents=[support, billing], server={"shards": 2})
    n = 24

    def one(i: int) -> tuple[int, dict]:
        agent, name, args = (
            (support, "crm__lookup_customer", {"customer_id": f"C-{i}"}) if i % 2 == 0
            else (billing, "tickets__close_ticket", {"ticket_id": f"T-{i}"})
        )
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
            r = http.post(gate.url, json=modern_request("tools/call", {"name": name, "arguments": args}, id=i),
                          headers=modern_headers("tools/call", name, key=agent.key))
            return r.status_code, parse_body(r)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(n)))
    for i, (status, body) in enumerate(results):
        assert status == 200, (i, body)
        assert body["id"] == i, body
        text = body["result"]["content"][0]["text"]
        if i % 2 == 0:
            assert json.loads(text)["id"] == f"C-{i}"
        else:
            assert text == f"closed T-{i}"

    lines = gate.audit_lines(n, where=is_call)
    assert sorted(l["request_id"] for l in lines) == list(range(n))
    assert all(l["decision"] == "allow" and l["outcome"] == "success" for l in lines)
    pairs = [(l["shard"], l["seq"]) for l in lines]
    assert len(set(pairs)) == n, f"(shard, seq) pairs repeat: {pairs}"
