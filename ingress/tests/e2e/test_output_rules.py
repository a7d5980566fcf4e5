"""Output rules end to end: the SDK upstream returns customer records with
e-mails, card numbers (Luhn-valid and not), government ids (valid, and
look-alikes never issued), nested arrays, an internal record and an embedded
private key; the SDK client, through toolgate, checks exactly
what it received, and the audit trail counts what fired without the values.
Results of the SSE upstream are filtered alike for agents asking for JSON
and for SSE, and its progress events never reach them. The demo's customer
lookup is checked for both demo agents.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import time

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from conftest import upstream_cfgs
from harness import (
    audit_segments,
    HTTP_TIMEOUT_S,
    READY_TIMEOUT_S,
    SDK_MODES,
    TOOLGATE_BIN,
    Agent,
    Demo,
    free_port,
    modern_headers,
    modern_request,
    parse_body,
    result_json,
    sdk_client_cm,
    stop_process,
)
from upstream_server import CARD_NUMBER, CUSTOMERS

OUTPUT_REFUSED = -32040

RULES = """
[output]
max_result_bytes = 65536

[[output_rules]]
name = "pii"
tools = ["crm__*"]
detectors = ["card", "email", "gov_id"]
drop_fields = ["$.customers[*].ssn"]

[[output_rules]]
name = "no-internal"
tools = ["crm__list_customers"]
agents = ["support-bot"]
drop_where = ['tier == "internal"', "detected(private_key)"]

[[output_rules]]
name = "no-keys"
tools = ["crm__list_customers"]
agents = ["billing-bot"]
refuse_when = ["detected(private_key)"]
"""


def expected_for_support() -> dict:
    """C-1 only (C-2 is internal, C-3 holds a key), card, e-mail and
    government ids masked, ssn dropped; Luhn-invalid order numbers and id
    look-alikes never issued kept."""
    c1 = copy.deepcopy(CUSTOMERS[0])
    c1["card"] = "[REDACTED:card]"
    c1["email"] = "[REDACTED:email]"
    c1["notes"] = ("verified SSN [REDACTED:us_ssn] and NINO [REDACTED:uk_nino]; "
                   "form refs 666-12-3456 and QQ123456C")
    del c1["ssn"]
    return {"customers": [c1], "count": 3}


def text_json(result) -> object:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    assert len(texts) == 1, result
    return json.loads(texts[0])


@pytest.mark.parametrize("mode", SDK_MODES)
def test_sdk_agents_get_filtered_results(make_gate, upstreams, mode):
    support = Agent("support-bot", ["crm__list_customers", "crm__lookup_customer"])
    billing = Agent("billing-bot", ["crm__list_customers"])
    gate = make_gate(agents=[support, billing], extra_toml=RULES)
    roots = []

    async def scenario():
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, support.key, mode) as client:
                r = await client.call_tool("crm__list_customers", {})
                assert not r.is_error, r
                # The SDK upstream sends the dict as JSON text, and as
                # structuredContent when it declares an output schema.
                assert r.structured_content in (None, expected_for_support())
                assert text_json(r) == expected_for_support()
                roots.append(1 if r.structured_content is None else 2)

                r = await client.call_tool("crm__lookup_customer", {"customer_id": "C-7"})
                assert result_json(r) == {
                    "id": "C-7",
                    "name": "Customer C-7",
                    "email": "[REDACTED:email]",
                    "card": "[REDACTED:card]",
                }

            async with sdk_client_cm(gate.url, billing.key, mode) as client:
                with pytest.raises(MCPError) as info:
                    await client.call_tool("crm__list_customers", {})
                assert info.value.code == OUTPUT_REFUSED, info.value
                assert info.value.message.startswith("tool result refused by output policy")
                assert "PRIVATE" not in info.value.message

    anyio.run(scenario)

    calls = gate.audit_lines(3, where=lambda l: l["method"] == "tools/call")
    listing = [l for l in calls if l["tool"] == "crm__list_customers"]
    ok = next(l for l in listing if l["agent"] == "support-bot")
    assert ok["decision"] == "allow" and ok["outcome"] == "success"
    # Every root of the result counts: the JSON text and structuredContent.
    n = roots[0]
    assert ok["redactions"] == [
        {"rule": "pii", "detector": "card", "count": n},
        {"rule": "pii", "detector": "email", "count": n},
        {"rule": "pii", "detector": "us_ssn", "count": n},
        {"rule": "pii", "detector": "uk_nino", "count": n},
        {"rule": "pii", "field": "$.customers[*].ssn", "count": n},
        {"rule": "no-internal", "drop_where": 'tier == "internal"', "count": n},
        {"rule": "no-internal", "drop_where": "detected(private_key)", "count": n},
    ]
    refused = next(l for l in listing if l["agent"] == "billing-bot")
    assert (refused["decision"], refused["reason"], refused["status"], refused["error_code"]) == (
        "deny", "output_refused", 403, OUTPUT_REFUSED)
    assert {"rule": "no-keys", "refuse_when": "detected(private_key)", "count": 1} in refused["redactions"]
    raw = "".join(seg.read_text() for seg in audit_segments(gate.audit_dir))
    for secret in ("4111 1111 1111 1111", "ada@example.com", "BEGIN RSA", "078-05-1120", "536-22-1234",
                   "AB 12 34 56 C"):
        assert secret not in raw


def test_results_over_the_limit_are_refused(make_gate, upstreams):
    support = Agent("support-bot", ["crm__list_customers", "crm__delete_record"])
    rules = RULES.replace("max_result_bytes = 65536", "max_result_bytes = 1024")
    gate = make_gate(agents=[support], extra_toml=rules.replace('agents = ["billing-bot"]', "agents = []"))

    async def scenario():
        async with sdk_client_cm(gate.url, support.key, "2026-07-28") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("crm__list_customers", {})
            assert info.value.code == OUTPUT_REFUSED
            assert "too large" in info.value.message
            # a small result of a filtered tool still passes
            r = await client.call_tool("crm__delete_record", {"record_id": "R-1"})
            assert result_json(r) == "deleted R-1"

    anyio.run(scenario)
    line = gate.audit_lines(1, where=lambda l: l["tool"] == "crm__list_customers")[0]
    assert (line["reason"], line["status"]) == ("output_too_large", 502)


# The `tickets` upstream answers in SSE; its `annotate` tool sends a progress
# event quoting the text before the result echoing it.
SSE_RULES = """
[output]
max_result_bytes = 2048

[[output_rules]]
name = "pii"
tools = ["tickets__annotate"]
detectors = ["card", "email", "gov_id"]
"""

SSE_TEXT = f"refund {CARD_NUMBER} to ada@example.com, ssn 536-22-1234, ref 666-12-3456"
SSE_MASKED = "refund [REDACTED:card] to [REDACTED:email], ssn [REDACTED:us_ssn], ref 666-12-3456"


def test_results_from_an_sse_upstream_are_filtered_for_json_and_sse_agents(make_gate, upstreams):
    agent = Agent("support-bot", ["tickets__annotate"])
    gate = make_gate(agents=[agent], extra_toml=SSE_RULES)
    expected = {"text": SSE_MASKED, "words": len(SSE_TEXT.split())}

    async def sdk():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            r = await client.call_tool("tickets__annotate", {"text": SSE_TEXT})
            assert not r.is_error, r
            assert result_json(r) == expected

    anyio.run(sdk)

    def call(http: httpx.Client, accept: str, text: str, id: str) -> httpx.Response:
        headers = modern_headers("tools/call", "tickets__annotate", key=agent.key)
        headers["Accept"] = accept
        body = modern_request("tools/call", {"name": "tickets__annotate", "arguments": {"text": text}}, id=id)
        return http.post(gate.url, json=body, headers=headers)

    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        for accept in ("application/json", "text/event-stream"):
            r = call(http, accept, SSE_TEXT, accept)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith(accept), r.headers
            if accept == "text/event-stream":
                # One event, the result: the upstream's progress event is not relayed.
                events = [e for e in r.text.split("\n\n") if e.strip()]
                assert len(events) == 1 and events[0].startswith("event: message\ndata: "), r.text
            msg = parse_body(r)
            assert msg["id"] == accept
            assert json.loads(msg["result"]["content"][0]["text"]) == expected
            assert msg["result"].get("structuredContent") in (None, expected)
            for value in (CARD_NUMBER, "ada@example.com", "536-22-1234", "half way", "notifications/progress"):
                assert value not in r.text, (value, r.text)

            # Over max_result_bytes: refused whole, in plain JSON whatever was asked for.
            r = call(http, accept, "x " * 1500, f"big-{accept}")
            assert r.status_code == 502, r.text
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["error"]["code"] == OUTPUT_REFUSED
            assert r.json()["error"]["message"].startswith("tool result too large to filter")
            assert "x x x" not in r.text

    lines = gate.audit_lines(5, where=lambda l: l["method"] == "tools/call")
    ok = [l for l in lines if l["outcome"] == "success"]
    assert len(ok) == 3
    for line in ok:
        n = line["redactions"][0]["count"]
        assert line["redactions"] == [
            {"rule": "pii", "detector": "card", "count": n},
            {"rule": "pii", "detector": "email", "count": n},
            {"rule": "pii", "detector": "us_ssn", "count": n},
        ]
    big = [l for l in lines if l["outcome"] != "success"]
    assert [(l["reason"], l["status"]) for l in big] == [("output_too_large", 502)] * 2


ERROR_RULES = """
[[output_rules]]
name = "pii"
tools = ["tickets__reject"]
detectors = ["card", "email"]
"""


def test_upstream_error_messages_and_data_are_filtered_too(make_gate, upstreams):
    """A tool that fails with a JSON-RPC error quoting sensitive data does
    not leak it through the error: message and data are masked alike, and
    the audit record counts what fired."""
    agent = Agent("support-bot", ["tickets__reject"])
    gate = make_gate(agents=[agent], extra_toml=ERROR_RULES)
    text = f"refund {CARD_NUMBER} to ada@example.com"
    masked = "refund [REDACTED:card] to [REDACTED:email]"

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("tickets__reject", {"text": text})
            assert info.value.code == -32001, info.value
            assert info.value.message == f"cannot file: {masked}"
            assert info.value.error.data == {"echo": masked, "fields": [masked]}

    anyio.run(scenario)
    line = gate.audit_lines(1, where=lambda l: l["tool"] == "tickets__reject")[0]
    assert (line["reason"], line["error_code"]) == ("upstream_error", -32001)
    assert line["redactions"] == [
        {"rule": "pii", "detector": "card", "count": 3},
        {"rule": "pii", "detector": "email", "count": 3},
    ]
    raw = "".join(seg.read_text() for seg in audit_segments(gate.audit_dir))
    assert "ada@example.com" not in raw


def test_hash_style_masks_are_stable_digests_of_the_value(make_gate, upstreams):
    agent = Agent("support-bot", ["crm__lookup_customer"])
    rules = """
[[output_rules]]
name = "correlate"
tools = ["crm__lookup_customer"]
detectors = ["email"]
style = "hash"
"""
    gate = make_gate(agents=[agent], extra_toml=rules)

    async def lookups() -> list[dict]:
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            return [result_json(await client.call_tool("crm__lookup_customer", {"customer_id": c}))
                    for c in ("C-7", "C-8", "C-7")]

    first, other, again = anyio.run(lookups)
    digest = hashlib.sha256(b"C-7@example.com").hexdigest()[:12]
    assert first == {"id": "C-7", "name": "Customer C-7", "email": f"[REDACTED:email:sha256:{digest}]",
                     "card": CARD_NUMBER}
    # The same value masks the same on every call, another value differently.
    assert again == first
    assert other["email"].startswith("[REDACTED:email:sha256:") and other["email"] != first["email"]
    lines = gate.audit_lines(3, where=lambda l: l["method"] == "tools/call")
    assert [[(r["rule"], r["detector"]) for r in l["redactions"]] for l in lines] == [[("correlate", "email")]] * 3
    raw = "".join(seg.read_text() for seg in audit_segments(gate.audit_dir))
    assert "C-7@example.com" not in raw


def test_demo_masks_card_for_both_agents_and_email_for_billing_only(tmp_path):
    with Demo(tmp_path) as demo:
        async def lookup(key: str) -> dict:
            async with sdk_client_cm(f"{demo.url}/mcp", key, "auto") as client:
                r = await client.call_tool("crm__lookup_customer", {"customer_id": "c-42"})
                assert not r.is_error, r
                return result_json(r)

        support = anyio.run(lookup, "tg_demo_support_key")
        billing = anyio.run(lookup, "tg_demo_billing_key")
        assert support == {"id": "c-42", "name": "Ada Lovelace", "email": "ada@example.com",
                           "card": "[REDACTED:card:****1111]", "tier": "gold"}
        assert billing == {**support, "email": "[REDACTED:email]"}
