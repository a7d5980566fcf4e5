"""A REST API behind toolgate from its OpenAPI document: a FastAPI billing
service serves its own ``/openapi.json``; toolgate exposes its operations as
MCP tools. The official SDK client, through toolgate, lists and calls them;
Cedar decides on their arguments, output rules mask the API's JSON, a 404 is
a tool error, hostile path values stay in their segment, and the API sees
the injected credential, never the agent's key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from billing_api import CARD
from harness import HOST, Agent, free_port, result_json, sdk_client_cm, stop_process, wait_for_port

SERVICE_TOKEN = "svc-billing-secret"
TOOLS = ["billing__listInvoices", "billing__getInvoice", "billing__createRefund"]

POLICY = """
@id("billing-bot-may-bill")
permit(principal == Toolgate::Agent::"billing-bot", action, resource);

@id("no-large-refunds")
forbid(principal, action == Toolgate::Action::"billing__createRefund", resource)
when { context.args.amount > 1000 };
"""


def billing_toml(tmp_path, api: str, monkeypatch, include: str = "") -> str:
    """The billing API as an `openapi` upstream (its document saved from the
    API), its injected credential, the policy file and a card-masking rule."""
    spec = tmp_path / "billing.openapi.json"
    spec.write_text(httpx.get(f"{api}/openapi.json", timeout=10).text)
    monkeypatch.setenv("TOOLGATE_TEST_BILLING_TOKEN", SERVICE_TOKEN)
    return f"""
[[upstreams]]
name = "billing"
kind = "openapi"
spec = {json.dumps(str(spec))}
base_url = {json.dumps(api)}
{include}
[upstreams.credential]
header = "Authorization"
value_prefix = "Bearer "
env = "TOOLGATE_TEST_BILLING_TOKEN"

[policies]
files = ["policy.cedar"]

[[output_rules]]
name = "cards"
tools = ["billing__*"]
detectors = ["card"]
"""


def openapi_gate(make_gate, tmp_path, api: str, monkeypatch, agent: Agent, include: str = ""):
    extra = billing_toml(tmp_path, api, monkeypatch, include)
    gate = make_gate(upstream_list=[], agents=[agent], extra_toml=extra, start=False)
    (gate.workdir / "policy.cedar").write_text(POLICY)
    gate.start()
    return gate


def seen(api: str) -> list[dict]:
    return httpx.get(f"{api}/_seen", timeout=10).json()


def test_operations_are_tools_called_through_the_whole_boundary(make_gate, tmp_path, billing_api, monkeypatch):
    agent = Agent("billing-bot", TOOLS)
    gate = openapi_gate(make_gate, tmp_path, billing_api, monkeypatch, agent)

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            # Only the attached operations; deleteInvoice exists but is not attached.
            assert sorted(listed) == sorted(TOOLS)
            schema = listed["billing__createRefund"].input_schema
            assert schema["properties"]["amount"]["type"] == "integer"
            assert set(schema["required"]) == {"invoice_id", "amount"}

            r = await client.call_tool("billing__listInvoices", {"status": "open"})
            assert not r.is_error, r
            invoices = result_json(r)
            assert [i["id"] for i in invoices] == ["inv-1"]
            # The output rule masked the API's card number.
            assert CARD not in json.dumps(invoices) and "4111" not in json.dumps(invoices)

            r = await client.call_tool("billing__getInvoice", {"invoice_id": "nope"})
            assert r.is_error
            assert "HTTP 404" in r.content[0].text

            r = await client.call_tool("billing__createRefund", {"invoice_id": "inv-1", "amount": 50})
            assert not r.is_error, r
            assert result_json(r)["amount"] == 50

            with pytest.raises(MCPError) as denied:
                await client.call_tool("billing__createRefund", {"invoice_id": "inv-1", "amount": 5000})
            assert "policy" in str(denied.value).lower()

            # Arguments the operation does not take, and a path value that
            # would add a segment, never become a request.
            r_before = len(seen(billing_api))
            with pytest.raises(MCPError) as bad:
                await client.call_tool("billing__getInvoice", {"invoice_id": "../refunds"})
            assert "may not hold `/`" in str(bad.value)
            with pytest.raises(MCPError) as bad:
                await client.call_tool("billing__getInvoice", {"invoice_id": "inv-1", "admin": True})
            assert "unknown argument" in str(bad.value)
            with pytest.raises(MCPError) as bad:
                await client.call_tool("billing__getInvoice", {"invoice_id": 7})
            assert "does not match its schema" in str(bad.value)
            # (A string amount never gets that far: Cedar cannot compare it
            # with 1000, and an evaluation error is a deny.)
            with pytest.raises(MCPError) as bad:
                await client.call_tool("billing__createRefund", {"invoice_id": "inv-1", "amount": "50"})
            assert "policy" in str(bad.value).lower()
            assert len(seen(billing_api)) == r_before

    anyio.run(scenario)

    requests = seen(billing_api)
    assert requests, "the API was never called"
    for r in requests:
        assert r["headers"].get("authorization") == f"Bearer {SERVICE_TOKEN}", r
        assert agent.key not in json.dumps(r)
    paths = [(r["method"], r["raw_path"]) for r in requests]
    assert ("GET", "/invoices") in paths
    assert ("POST", "/refunds") in paths
    assert not [p for p in paths if "refunds" in p[1] and p[0] == "GET"], paths
    # The denied refund never reached the API: exactly one refund was posted.
    assert [p for p in paths if p == ("POST", "/refunds")] == [("POST", "/refunds")]

    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    assert {r["upstream"] for r in calls} == {"billing"}
    denied = [r for r in calls if r["decision"] == "deny"]
    assert [r["tool"] for r in denied] == ["billing__createRefund"] * 2
    assert {r["reason"] for r in denied} == {"forbidden_by_policy", "policy_error"}
    forbidden = next(r for r in denied if r["reason"] == "forbidden_by_policy")
    assert forbidden["policies"] == ["no-large-refunds"]
    # Each call that reached the API records the request it became.
    http = [r["http"] for r in calls if "http" in r]
    assert {"method": "GET", "path": "/invoices", "status": 200} in http
    assert {"method": "GET", "path": "/invoices/{invoice_id}", "status": 404} in http
    assert {"method": "POST", "path": "/refunds", "status": 200} in http
    assert all("http" not in r for r in denied), "a denied call never became a request"


def test_check_names_the_document_and_include_narrows_the_surface(make_gate, tmp_path, billing_api, monkeypatch):
    agent = Agent("billing-bot", ["billing__getInvoice"])
    gate = openapi_gate(make_gate, tmp_path, billing_api, monkeypatch, agent, include='include = ["tag:invoices"]')

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["billing__getInvoice"]
            r = await client.call_tool("billing__getInvoice", {"invoice_id": "inv-2"})
            assert result_json(r)["status"] == "paid"

    anyio.run(scenario)

    # A document that is not OpenAPI 3 is refused by `toolgate check`, naming it.
    bad = tmp_path / "swagger.json"
    bad.write_text(json.dumps({"swagger": "2.0", "paths": {}}))
    config = gate.config_path.read_text().replace(str(tmp_path / "billing.openapi.json"), str(bad))
    broken = gate.workdir / "broken.toml"
    broken.write_text(config)
    from harness import TOOLGATE_BIN
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(broken)], capture_output=True, text=True, timeout=60,
                       env={"TOOLGATE_TEST_BILLING_TOKEN": SERVICE_TOKEN, "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "swagger.json" in r.stderr and "OpenAPI 2.0" in r.stderr, r.stderr
