"""Where an OpenAPI upstream's document comes from, and how it stays current:
the demo's REST API,
a YAML file, a URL served by the API itself (FastAPI's own
``/openapi.json``), an upstream created through the admin API, a document
edited while toolgate runs (the surface follows it; a broken edit keeps the
last good surface), and ``toolgate tools list`` reviewing the surface
without ``[tool_pins]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import HOST, TOOLGATE_BIN, Agent, Demo, free_port, result_json, sdk_client_cm, stop_process, wait_for_port
from test_admin_api import admin_gate  # noqa: F401  (fixture)



def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML of a JSON value (keys and scalars quoted as JSON,
    which YAML reads as the same strings and numbers)."""
    pad = " " * indent
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{json.dumps(k)}:\n{to_yaml(v, indent + 2)}")
            else:
                out.append(f"{pad}{json.dumps(k)}: {json.dumps(v)}\n")
    else:
        for v in value:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                out.append(f"{pad}- {inner.lstrip()}")
            else:
                out.append(f"{pad}- {json.dumps(v)}\n")
    return "".join(out)


def only(doc: dict, *operation_ids: str) -> dict:
    """`doc` with only the operations named."""
    d = json.loads(json.dumps(doc))
    for path in list(d["paths"]):
        item = d["paths"][path]
        for method in list(item):
            if item[method].get("operationId") not in operation_ids:
                del item[method]
        if not item:
            del d["paths"][path]
    return d


async def listed(gate, key: str) -> list[str]:
    async with sdk_client_cm(gate.url, key, "auto") as client:
        return sorted(t.name for t in (await client.list_tools()).tools)


def wait_listed(gate, key: str, want: list[str], timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = anyio.run(listed, gate, key)
        if names == sorted(want) or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def test_yaml_document_follows_edits_and_keeps_the_last_good_surface(make_gate, tmp_path, billing_api):
    doc = httpx.get(f"{billing_api}/openapi.json", timeout=10).json()
    spec = tmp_path / "billing.yaml"
    spec.write_text(to_yaml(only(doc, "listInvoices")))
    all_tools = ["billing__listInvoices", "billing__getInvoice"]
    agent = Agent("billing-bot", all_tools)
    extra = f"""
[[upstreams]]
name = "billing"
kind = "openapi"
spec = {json.dumps(str(spec))}
base_url = {json.dumps(billing_api)}
"""
    gate = make_gate(upstream_list=[], agents=[agent], extra_toml=extra)
    assert anyio.run(listed, gate, agent.key) == ["billing__listInvoices"]

    # `toolgate tools list` reviews the surface without `[tool_pins]`: each
    # tool with its digest and the HTTP operation it becomes.
    r = subprocess.run([str(TOOLGATE_BIN), "tools", "list", "-c", str(gate.config_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("billing__listInvoices ") and lines[0].endswith(" GET /invoices"), r.stdout

    # The document gains an operation while toolgate runs: the surface follows.
    spec.write_text(to_yaml(only(doc, "listInvoices", "getInvoice")))
    assert wait_listed(gate, agent.key, all_tools) == sorted(all_tools), gate.stderr_text()

    async def get_invoice():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            return result_json(await client.call_tool("billing__getInvoice", {"invoice_id": "inv-2"}))

    assert anyio.run(get_invoice)["status"] == "paid"

    # A broken edit keeps the last good surface, and says so once.
    spec.write_text("openapi: 3.1.0\npaths: [this is not\n")
    deadline = time.monotonic() + 15
    while "keeping the last good tool surface" not in gate.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "keeping the last good tool surface" in gate.stderr_text()
    assert anyio.run(listed, gate, agent.key) == sorted(all_tools)
    assert anyio.run(get_invoice)["status"] == "paid"
    assert gate.stderr_text().count("keeping the last good tool surface") == 1


def test_document_fetched_from_the_api_itself(make_gate, billing_api):
    agent = Agent("billing-bot", ["billing__getInvoice"])
    # No `base_url`: the origin the document is served from.
    extra = f"""
[[upstreams]]
name = "billing"
kind = "openapi"
spec = "{billing_api}/openapi.json"
"""
    gate = make_gate(upstream_list=[], agents=[agent], extra_toml=extra)

    async def scenario():
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["billing__getInvoice"]
            return result_json(await client.call_tool("billing__getInvoice", {"invoice_id": "inv-1"}))

    assert anyio.run(scenario)["id"] == "inv-1"

    # An unreachable document URL is a `toolgate check` error naming it.
    dead = f"http://{HOST}:{free_port()}/openapi.json"
    broken = gate.workdir / "broken.toml"
    broken.write_text(gate.config_path.read_text().replace(f"{billing_api}/openapi.json", dead))
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(broken)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert dead in r.stderr and "cannot fetch" in r.stderr, r.stderr


def test_openapi_upstream_created_through_the_admin_api(admin_gate, billing_api):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    spec = {"kind": "openapi", "spec": f"{billing_api}/openapi.json", "include": ["tag:invoices"]}
    r = admin.put("upstreams/billing", spec)
    assert r.status_code == 200, r.text
    assert admin.get("upstreams/billing").json()["spec"] == spec
    version = admin.version("agents/support-bot")
    r = admin.put("agents/support-bot", {"tools": ["crm__lookup_customer", "billing__getInvoice"]}, version)
    assert r.status_code == 200, r.text

    async def scenario():
        async with sdk_client_cm(gate.url, bot.key, "auto") as client:
            deadline = time.monotonic() + 15
            while True:
                names = {t.name for t in (await client.list_tools()).tools}
                if "billing__getInvoice" in names or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.1)
            assert names == {"crm__lookup_customer", "billing__getInvoice"}
            return result_json(await client.call_tool("billing__getInvoice", {"invoice_id": "inv-2"}))

    assert anyio.run(scenario)["status"] == "paid"

    # A document that is not there is refused at write time, naming it.
    r = admin.put("upstreams/ghost", {"kind": "openapi", "spec": f"{billing_api}/nope.json"})
    assert r.status_code == 422, r.text
    assert "nope.json" in r.text and "404" in r.text


def test_demo_includes_a_rest_api_as_tools(tmp_path):
    with Demo(tmp_path) as demo:
        async def scenario():
            async with sdk_client_cm(f"{demo.url}/mcp", "tg_demo_billing_key", "auto") as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert {"billing__getInvoice", "billing__createRefund"} <= names
                invoice = result_json(await client.call_tool("billing__getInvoice", {"invoice_id": "inv-1"}))
                refund = result_json(await client.call_tool("billing__createRefund", {"invoice_id": "inv-1", "amount": 50}))
                with pytest.raises(MCPError) as denied:
                    await client.call_tool("billing__createRefund", {"invoice_id": "inv-1", "amount": 5000})
                return invoice, refund, str(denied.value)

        invoice, refund, denied = anyio.run(scenario)
        # The API answered (so toolgate injected its credential), the card is masked.
        assert invoice["id"] == "inv-1" and invoice["card"] == "[REDACTED:card:****1111]"
        assert refund["amount"] == 50
        assert "policy" in denied.lower()
        out = demo.output()
        assert "billing__getInvoice" in out and "amount\":5000" in out
