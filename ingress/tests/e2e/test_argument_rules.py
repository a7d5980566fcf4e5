"""Data-loss prevention on what agents send: output rules with
``applies_to = ["arguments"]`` mask detected values in a call's arguments
before it leaves, or refuse the call. The SDK ``tickets`` upstream echoes
the ticket title it received, so the test sees exactly what left toolgate.
"""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from conftest import upstream_cfgs
from harness import Agent, audit_segments, result_json, sdk_client_cm

FORBIDDEN = -32003
CARD = "4111 1111 1111 1111"
EMAIL = "ada@example.com"
KEY_BLOCK = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----"

RULES = """
[[output_rules]]
name = "dlp-out"
tools = ["tickets__create_ticket"]
applies_to = ["arguments"]
detectors = ["card", "email"]

[[output_rules]]
name = "no-keys-out"
tools = ["tickets__create_ticket"]
applies_to = ["arguments"]
refuse_when = ["detected(private_key)"]
"""


@pytest.fixture
def gate(make_gate):
    return make_gate(agents=[Agent("support-bot", ["tickets__create_ticket", "crm__lookup_customer"])],
                     extra_toml=RULES)


def test_detected_values_are_masked_before_the_call_leaves(gate):
    agent = gate.agents["support-bot"]

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            res = await client.call_tool(
                "tickets__create_ticket", {"title": f"refund card {CARD} for {EMAIL}", "priority": 2})
            assert not res.is_error
            return result_json(res)

    out = anyio.run(scenario)
    # The upstream echoed what it received: masked, the rest untouched.
    assert out["title"] == "refund card [REDACTED:card] for [REDACTED:email]"
    assert out["priority"] == 2
    [rec] = gate.audit_lines(1, where=lambda l: l["method"] == "tools/call")
    assert rec["decision"] == "allow"
    assert rec["redactions"] == [
        {"rule": "dlp-out", "detector": "card", "count": 1},
        {"rule": "dlp-out", "detector": "email", "count": 1},
    ]
    raw = "".join(seg.read_text() for seg in audit_segments(gate.audit_dir))
    assert CARD not in raw and EMAIL not in raw


def test_arguments_holding_a_private_key_refuse_the_call(gate):
    agent = gate.agents["support-bot"]

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("tickets__create_ticket", {"title": KEY_BLOCK, "priority": 1})
            return info.value

    err = anyio.run(scenario)
    assert err.code == FORBIDDEN
    assert "BEGIN" not in err.message
    [rec] = gate.audit_lines(1, where=lambda l: l["method"] == "tools/call")
    assert (rec["decision"], rec["reason"], rec["status"]) == ("deny", "arguments_refused", 403)
    assert {"rule": "no-keys-out", "refuse_when": "detected(private_key)", "count": 1} in rec["redactions"]


def test_clean_arguments_and_other_tools_pass_unchanged(gate):
    agent = gate.agents["support-bot"]

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            a = result_json(await client.call_tool("tickets__create_ticket", {"title": "printer jam", "priority": 3}))
            b = result_json(await client.call_tool("crm__lookup_customer", {"customer_id": EMAIL}))
            return a, b

    a, b = anyio.run(scenario)
    assert a["title"] == "printer jam"
    # Rules name their tools: the lookup's arguments are not filtered.
    assert EMAIL in str(b)


def test_description_rules_rewrite_tools_list_but_never_the_name(make_gate):
    rules = """
[[output_rules]]
name = "hide-internals"
tools = ["crm__*"]
applies_to = ["descriptions"]
patterns = [{ name = "internal", regex = 'customer record|lookup_customer' }]
"""
    gate = make_gate(agents=[Agent("support-bot", ["crm__lookup_customer", "tickets__create_ticket"])],
                     extra_toml=rules)
    agent = gate.agents["support-bot"]

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            res = await client.call_tool("crm__lookup_customer", {"customer_id": "C-1"})
            return tools, res

    tools, res = anyio.run(scenario)
    assert set(tools) == {"crm__lookup_customer", "tickets__create_ticket"}
    assert tools["crm__lookup_customer"].description == "Look up a [REDACTED:internal] by id."
    assert tools["tickets__create_ticket"].description == "Open a ticket."
    assert not res.is_error
