"""The REST door, ``/rest/{upstream}/{path}``: agents that call plain HTTP
APIs (here ``httpx``, as function-calling code would) go through the same
boundary as MCP clients. The API is the FastAPI billing service behind its
own OpenAPI document; the Cedar policy file is the MCP tests' own. Each
operation and argument set gets the same decision through both doors (side
by side), the API never sees the agent's credential or cookies, the agent
never sees the API's, path tricks are refused before anything is sent, and
the TLS listener serves the door too.
"""

from __future__ import annotations

import json

import anyio
import httpx
from mcp.shared.exceptions import MCPError

from billing_api import CARD
from conftest import release_gate, start_gate
from harness import HOST, Agent, RawConn, http_request, result_json, sdk_client_cm
from test_openapi_upstream import POLICY, SERVICE_TOKEN, TOOLS, billing_toml, openapi_gate, seen
from test_tls import Pki, tls_toml

def rest(gate, agent: Agent, method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {agent.key}", **kw.pop("headers", {})}
    with httpx.Client(timeout=10, **kw.pop("client", {})) as http:
        return http.request(method, f"{gate.base}/rest/billing{path}", headers=headers, **kw)


# (name, MCP tool, MCP arguments, REST method, REST path, REST JSON body)
CASES = [
    ("list", "billing__listInvoices", {"status": "open"}, "GET", "/invoices?status=open", None),
    ("get", "billing__getInvoice", {"invoice_id": "inv-2"}, "GET", "/invoices/inv-2", None),
    ("missing", "billing__getInvoice", {"invoice_id": "nope"}, "GET", "/invoices/nope", None),
    ("small refund", "billing__createRefund", {"invoice_id": "inv-1", "amount": 50}, "POST", "/refunds",
     {"invoice_id": "inv-1", "amount": 50}),
    ("large refund", "billing__createRefund", {"invoice_id": "inv-1", "amount": 5000}, "POST", "/refunds",
     {"invoice_id": "inv-1", "amount": 5000}),
    ("text amount", "billing__createRefund", {"invoice_id": "inv-1", "amount": "50"}, "POST", "/refunds",
     {"invoice_id": "inv-1", "amount": "50"}),
    ("unattached", "billing__deleteInvoice", {"invoice_id": "inv-1"}, "DELETE", "/invoices/inv-1", None),
]


def test_the_same_decision_through_both_doors(make_gate, tmp_path, billing_api, monkeypatch):
    agent = Agent("billing-bot", TOOLS)
    gate = openapi_gate(make_gate, tmp_path, billing_api, monkeypatch, agent)

    async def through_mcp():
        out = {}
        async with sdk_client_cm(gate.url, agent.key, "auto") as client:
            for name, tool, args, *_ in CASES:
                try:
                    r = await client.call_tool(tool, args)
                    out[name] = "tool_error" if r.is_error else "ok"
                except MCPError:
                    out[name] = "refused"
        return out

    mcp = anyio.run(through_mcp)
    rest_answers = {}
    for name, _, _, method, path, body in CASES:
        rest_answers[name] = rest(gate, agent, method, path, **({"json": body} if body is not None else {}))

    # What each door's caller saw.
    assert mcp == {"list": "ok", "get": "ok", "missing": "tool_error", "small refund": "ok",
                   "large refund": "refused", "text amount": "refused", "unattached": "refused"}
    status = {n: r.status_code for n, r in rest_answers.items()}
    assert status == {"list": 200, "get": 200, "missing": 404, "small refund": 200, "large refund": 403,
                      "text amount": 403, "unattached": 404}, {n: r.text for n, r in rest_answers.items()}
    # The API's JSON comes back as the API wrote it, with the card masked.
    invoice = rest_answers["get"].json()
    assert invoice["id"] == "inv-2" and invoice["card"] == "[REDACTED:card]" and CARD not in rest_answers["get"].text
    assert rest_answers["list"].json()[0]["id"] == "inv-1"
    assert rest_answers["small refund"].json()["amount"] == 50
    # A deny names its reason, never a policy.
    assert rest_answers["large refund"].json()["error"] == "denied_by_policy"
    assert "no-large-refunds" not in rest_answers["large refund"].text
    # Unattached looks exactly like a path with no operation.
    missing_route = rest(gate, agent, "GET", "/nothing/here")
    assert (missing_route.status_code, missing_route.json()) == (404, rest_answers["unattached"].json())

    # The records: the same tool, decision, reason and policies per case,
    # whichever door; REST records say so and carry the request's method
    # and path template.
    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    by_door = {"mcp": [r for r in calls if "door" not in r], "rest": [r for r in calls if r.get("door") == "rest"]}
    assert len(by_door["mcp"]) == len(CASES) and len(by_door["rest"]) == len(CASES) + 1
    for m, r in zip(by_door["mcp"], by_door["rest"]):
        assert (m["tool"], m["decision"], m["reason"], m["policies"]) == \
            (r["tool"], r["decision"], r["reason"], r["policies"]), (m, r)
    assert by_door["rest"][-1]["reason"] == "path_not_found"
    small = [r for r in by_door["rest"] if r["tool"] == "billing__createRefund" and r["decision"] == "allow"]
    assert small[0]["http"] == {"method": "POST", "path": "/refunds", "status": 200}
    assert [r["reason"] for r in by_door["rest"] if r["tool"] == "billing__createRefund"] == \
        ["allowed_by_policy", "forbidden_by_policy", "policy_error"]
    # Exactly two refunds reached the API (one per door); no denied one did.
    assert [(r["method"], r["raw_path"]) for r in seen(billing_api)].count(("POST", "/refunds")) == 2


def test_credentials_stay_on_their_side(make_gate, tmp_path, billing_api, monkeypatch):
    agent = Agent("billing-bot", TOOLS)
    gate = openapi_gate(make_gate, tmp_path, billing_api, monkeypatch, agent)
    r = rest(gate, agent, "POST", "/refunds?", json={"invoice_id": "inv-1", "amount": 7},
             headers={"Cookie": "session=agent-cookie-canary", "X-Api-Key": "agent-apikey-canary",
                      "Proxy-Authorization": "Basic Y2FuYXJ5", "X-Forwarded-For": "10.6.6.6"})
    assert r.status_code == 200, r.text
    # The agent gets the API's JSON and nothing of its headers or credential.
    assert SERVICE_TOKEN not in r.text and SERVICE_TOKEN not in json.dumps(dict(r.headers))
    assert "uvicorn" not in json.dumps(dict(r.headers)).lower()
    [sent] = [s for s in seen(billing_api) if s["raw_path"] == "/refunds"]
    assert sent["headers"]["authorization"] == f"Bearer {SERVICE_TOKEN}"
    leaked = json.dumps(sent)
    for canary in (agent.key, "agent-cookie-canary", "agent-apikey-canary", "Y2FuYXJ5", "10.6.6.6"):
        assert canary not in leaked, (canary, sent)
    assert "cookie" not in sent["headers"] and "x-api-key" not in sent["headers"]


def test_path_tricks_are_refused_before_anything_is_sent(make_gate, tmp_path, billing_api, monkeypatch):
    agent = Agent("billing-bot", TOOLS)
    gate = openapi_gate(make_gate, tmp_path, billing_api, monkeypatch, agent)
    before = len(seen(billing_api))
    tricks = {
        "/rest/billing/invoices/..": 400,
        "/rest/billing/invoices/%2e%2e": 400,
        "/rest/billing/invoices/%2E%2e/refunds": 400,
        "/rest/billing/invoices/inv-1%2f..%2frefunds": 400,
        "/rest/billing//invoices": 400,
        "/rest/billing/invoices//inv-1": 400,
        "/rest/billing/invoices/inv-1?x=1?y=2": 400,
        "/rest/billing/invoices/inv-1/": 400,
        "/rest/billing/../billing/invoices/inv-1": 400,
        "/rest/billing/Invoices/inv-1": 404,
        "/rest/billing": 404,
        "/rest/nobody/invoices/inv-1": 404,
        "/rest/": 404,
    }
    with RawConn(gate.port) as conn:
        for path, want in tricks.items():
            conn.send(http_request("GET", path, gate.port, headers={"Authorization": f"Bearer {agent.key}"}))
            r = conn.read_response()
            assert r.status == want, (path, r.status, r.body)
            assert r.json()["error"] in ("invalid_request", "not_found"), (path, r.body)
    # A body that is not JSON, where the operation takes JSON.
    r = rest(gate, agent, "POST", "/refunds", content=b"invoice_id=inv-1&amount=5",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415, r.text
    r = rest(gate, agent, "POST", "/refunds", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_params", r.text
    assert len(seen(billing_api)) == before, "a refused request reached the API"
    refused = [r for r in gate.read_audit() if r.get("door") == "rest"]
    assert len(refused) == len(tricks) + 2 and all(r["decision"] == "deny" for r in refused)


def test_the_tls_listener_serves_the_door(tmp_path, billing_api, monkeypatch):
    pki = Pki(tmp_path)
    agent = Agent("billing-bot", TOOLS)
    extra = tls_toml(pki, None) + billing_toml(tmp_path, billing_api, monkeypatch)
    gate = start_gate(tmp_path / "gate", [], [agent], extra_toml=extra, tls_client={"verify": pki.ctx()}, start=False)
    (gate.workdir / "policy.cedar").write_text(POLICY)
    try:
        gate.start()
        assert gate.base.startswith("https://")
        r = rest(gate, agent, "GET", "/invoices/inv-1", client={"verify": pki.ctx()})
        assert r.status_code == 200 and r.json()["id"] == "inv-1", r.text
        r = rest(gate, Agent("nobody", []), "GET", "/invoices/inv-1", client={"verify": pki.ctx()})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), r.text
    finally:
        release_gate(gate)
    assert HOST in gate.base


def test_declared_routes_reach_an_mcp_servers_tools(make_gate, upstreams):
    agent = Agent("support-bot", ["crm__lookup_customer", "crm__list_customers"])
    extra = f"""
[[upstreams]]
name = "crm"
url = "{upstreams['crm'].url}"

[[upstreams.routes]]
method = "GET"
path = "/customers/{{customer_id}}"
tool = "lookup_customer"

[[upstreams.routes]]
method = "GET"
path = "/customers"
tool = "list_customers"

[[upstreams.routes]]
method = "DELETE"
path = "/records/{{record_id}}"
tool = "delete_record"

[[output_rules]]
name = "cards"
tools = ["crm__*"]
detectors = ["card"]
"""
    gate = make_gate(upstream_list=[], agents=[agent], extra_toml=extra)

    def get(method: str, path: str) -> httpx.Response:
        with httpx.Client(timeout=10) as http:
            return http.request(method, f"{gate.base}/rest/crm{path}", headers={"Authorization": f"Bearer {agent.key}"})

    r = get("GET", "/customers/C-7")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "C-7" and r.json()["card"] == "[REDACTED:card]"
    listed = get("GET", "/customers")
    assert listed.status_code == 200, listed.text
    assert "4111 1111 1111 1111" not in listed.text and "[REDACTED:card]" in listed.text
    # Declared but not attached, and not declared at all: the same 404.
    assert get("DELETE", "/records/R-1").status_code == 404
    assert get("POST", "/customers/C-7").status_code == 404
    assert get("GET", "/customers/C-7/extra").status_code == 404
    calls = [r for r in gate.read_audit() if r.get("door") == "rest"]
    assert [(c["tool"], c["decision"], c["reason"]) for c in calls[:3]] == [
        ("crm__lookup_customer", "allow", "attached"),
        ("crm__list_customers", "allow", "attached"),
        ("crm__delete_record", "deny", "tool_not_attached"),
    ]
    assert [c["reason"] for c in calls[3:]] == ["path_not_found", "path_not_found"]
