"""Prompts and resources through toolgate, governed like tools.

An SDK upstream (``docs`` in upstream_server.py) offers resources, a
resource template and prompts; the official SDK client reaches them through
toolgate in both wire eras. What is checked: the lists hold only what is
attached, in toolgate's URI namespace; a read goes to the upstream under
its own URI and comes back with the exposed one, through the output rules;
Cedar denies a URI and a prompt argument; unattached, foreign and smuggling
URIs and unattached prompts are refused; every request has its audit record
naming what it acted on.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import (
    SDK_MODES,
    Agent,
    UpstreamCfg,
    UpstreamProc,
    audit_segments,
    legacy_headers,
    initialize_request,
    parse_body,
    sdk_client_cm,
)
from upstream_server import CARD_NUMBER

FORBIDDEN = -32003
INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002

README = "toolgate://docs/file:///public/readme.md"
PLAN = "toolgate://docs/file:///public/drafts/plan.md"
SECRET = "toolgate://docs/file:///secret/key"
TEMPLATE = "toolgate://docs/file:///public/pages/{page}"

RULES = """
[[output_rules]]
name = "pii"
tools = ["toolgate://docs/*", "docs__*"]
detectors = ["card", "email"]

[policies]
files = ["policies"]
"""

POLICIES = """
@id("tools")
permit(principal, action == Toolgate::Action::"docs__search", resource);

@id("public-reads")
permit(principal, action == Toolgate::Action::"resources/read", resource in Toolgate::Upstream::"docs")
unless { context.uri like "*/drafts/*" };

@id("prompts")
permit(principal, action == Toolgate::Action::"prompts/get", resource);

@id("no-salaries")
forbid(principal, action == Toolgate::Action::"prompts/get", resource == Toolgate::Prompt::"docs__summarize")
when { context.args has topic && context.args.topic == "salaries" };
"""


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    proc = UpstreamProc("docs", "json").start(tmp_path_factory.mktemp("docs-upstream"))
    try:
        yield proc
    finally:
        proc.stop()


def reader_and_other() -> tuple[Agent, Agent]:
    reader = Agent("reader", ["docs__search"], prompts=["docs__summarize"],
                   resources=["toolgate://docs/file:///public/*"])
    other = Agent("other", ["docs__search"])
    return reader, other


def docs_gate(make_gate, docs, agents):
    gate = make_gate(upstream_list=[UpstreamCfg("docs", docs.url)], agents=agents, extra_toml=RULES,
                     start=False)
    (gate.workdir / "policies").mkdir()
    (gate.workdir / "policies" / "docs.cedar").write_text(POLICIES)
    gate.start()
    return gate


async def refused(call, code: int) -> MCPError:
    with pytest.raises(MCPError) as info:
        await call
    assert info.value.code == code, info.value
    return info.value


@pytest.mark.parametrize("mode", [SDK_MODES[0], SDK_MODES[1]])
def test_sdk_agents_list_read_and_get_through_the_gate(make_gate, docs, mode):
    reader, other = reader_and_other()
    gate = docs_gate(make_gate, docs, [reader, other])

    async def scenario():
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, reader.key, mode) as client:
                listed = await client.list_resources()
                uris = sorted(str(r.uri) for r in listed.resources)
                # Attached by pattern: the public files, not the secret.
                assert uris == [PLAN, README], uris
                templates = await client.list_resource_templates()
                assert [t.uri_template for t in templates.resource_templates] == [TEMPLATE]

                read = await client.read_resource(README)
                [content] = read.contents
                assert str(content.uri) == README, "answered in the gate's namespace"
                assert "[REDACTED:card]" in content.text and "[REDACTED:email]" in content.text
                assert CARD_NUMBER not in content.text and "ada@example.com" not in content.text

                page = await client.read_resource("toolgate://docs/file:///public/pages/guide")
                assert page.contents[0].text == "page guide: How to use the docs server."

                await refused(client.read_resource(PLAN), FORBIDDEN)
                await refused(client.read_resource(SECRET), RESOURCE_NOT_FOUND)
                await refused(client.read_resource("toolgate://docs/file:///public/../secret/key"),
                              INVALID_PARAMS)
                await refused(client.read_resource("file:///public/readme.md"), INVALID_PARAMS)

                prompts = await client.list_prompts()
                assert [p.name for p in prompts.prompts] == ["docs__summarize"]
                assert [a.name for a in prompts.prompts[0].arguments] == ["topic", "audience"]
                got = await client.get_prompt("docs__summarize", {"topic": "billing"})
                text = got.messages[0].content.text
                assert text.startswith("Summarize billing for a customer."), text
                assert "ada@example.com" not in text and "[REDACTED:email]" in text
                await refused(client.get_prompt("docs__summarize", {"topic": "salaries"}), FORBIDDEN)
                await refused(client.get_prompt("docs__internal", {"topic": "x"}), INVALID_PARAMS)

            async with sdk_client_cm(gate.url, other.key, mode) as client:
                assert (await client.list_resources()).resources == []
                assert (await client.list_resource_templates()).resource_templates == []
                assert (await client.list_prompts()).prompts == []
                await refused(client.read_resource(README), RESOURCE_NOT_FOUND)
                await refused(client.get_prompt("docs__summarize", {"topic": "billing"}), INVALID_PARAMS)

    anyio.run(scenario)

    reads = gate.audit_lines(11, where=lambda l: l["method"] in ("resources/read", "prompts/get"))
    by_target = {}
    for line in reads:
        by_target.setdefault((line["agent"], line["target"]), []).append(line)
    ok = by_target[("reader", README)][0]
    assert (ok["decision"], ok["reason"], ok["upstream"], ok["policies"]) == (
        "allow", "allowed_by_policy", "docs", ["public-reads"])
    assert {"rule": "pii", "detector": "card", "count": 1} in ok["redactions"]
    denied = by_target[("reader", PLAN)][0]
    assert (denied["decision"], denied["reason"], denied["status"]) == ("deny", "no_permit", 403)
    missing = by_target[("reader", SECRET)][0]
    assert (missing["decision"], missing["reason"], missing["error_code"]) == (
        "deny", "resource_not_attached", RESOURCE_NOT_FOUND)
    salaries = [l for l in by_target[("reader", "docs__summarize")] if l["decision"] == "deny"]
    assert [(l["reason"], l["policies"]) for l in salaries] == [("forbidden_by_policy", ["no-salaries"])]
    assert by_target[("other", README)][0]["reason"] == "resource_not_attached"
    assert by_target[("other", "docs__summarize")][0]["reason"] == "prompt_not_attached"
    raw = "".join(seg.read_text() for seg in audit_segments(gate.audit_dir))
    assert CARD_NUMBER not in raw and "ada@example.com" not in raw


def test_routing_headers_and_argument_types_are_checked(make_gate, docs):
    reader, other = reader_and_other()
    gate = docs_gate(make_gate, docs, [reader, other])
    with httpx.Client(timeout=10.0) as http:
        init = http.post(gate.url, json=initialize_request(), headers=legacy_headers(reader.key))
        assert init.status_code == 200, init.text
        caps = parse_body(init)["result"]["capabilities"]
        assert caps["prompts"] == {"listChanged": True}
        assert caps["resources"] == {"subscribe": False, "listChanged": True}
        session = init.headers["mcp-session-id"]
        headers = legacy_headers(reader.key, session=session)

        def send(method, params):
            body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": params}
            return http.post(gate.url, json=body, headers=headers)

        wrong_type = send("prompts/get", {"name": "docs__summarize", "arguments": {"topic": 3}})
        assert wrong_type.status_code == 400
        err = parse_body(wrong_type)["error"]
        assert err["code"] == INVALID_PARAMS and "`topic` must be a string" in err["message"], err
        no_uri = send("resources/read", {})
        assert parse_body(no_uri)["error"]["code"] == INVALID_PARAMS
        smuggled = send("resources/read", {"uri": "toolgate://docs/file:///public/%2e%2e/secret/key"})
        assert parse_body(smuggled)["error"]["code"] == INVALID_PARAMS
        # Another upstream's namespace inside the path stays this one's (and is not attached).
        crossed = send("resources/read", {"uri": "toolgate://docs/toolgate://crm/file:///x"})
        assert parse_body(crossed)["error"]["code"] == RESOURCE_NOT_FOUND
    lines = gate.audit_lines(4, where=lambda l: l["method"] in ("resources/read", "prompts/get"))
    assert all(l["decision"] == "deny" for l in lines)
    assert sorted(l["reason"] for l in lines) == [
        "invalid_params", "invalid_params", "invalid_params", "resource_not_attached"]


def test_policy_validate_knows_prompts_and_resources(make_gate, docs):
    import subprocess

    from harness import TOOLGATE_BIN

    reader, other = reader_and_other()
    gate = docs_gate(make_gate, docs, [reader, other])

    def validate() -> subprocess.CompletedProcess:
        return subprocess.run([str(TOOLGATE_BIN), "policy", "validate", "-c", str(gate.config_path)],
                              capture_output=True, text=True, timeout=60)

    ok = validate()
    assert ok.returncode == 0, ok.stderr
    assert "policies ok: 4 policies" in ok.stdout
    # A prompt argument no known prompt declares fails, with file and line.
    (gate.workdir / "policies" / "docs.cedar").write_text(
        POLICIES + '\n@id("bad")\nforbid(principal, action == Toolgate::Action::"prompts/get", resource)\n'
        'when { context.args.colour == "red" };\n')
    bad = validate()
    assert bad.returncode != 0 and "docs.cedar: line" in bad.stderr and "colour" in bad.stderr, bad.stderr


def test_the_demo_serves_a_customer_resource_and_a_prompt(tmp_path):
    from harness import Demo

    uri = "toolgate://crm/crm://customers/c-42"
    with Demo(tmp_path) as demo:
        assert uri in demo.output(), "the demo prints how to read the resource"

        async def support():
            async with sdk_client_cm(f"{demo.url}/mcp", "tg_demo_support_key", "auto") as client:
                listed = await client.list_resources()
                assert [str(r.uri) for r in listed.resources] == [uri]
                templates = await client.list_resource_templates()
                assert [t.uri_template for t in templates.resource_templates] == [
                    "toolgate://crm/crm://customers/{customer_id}"]
                read = await client.read_resource("toolgate://crm/crm://customers/c-7")
                record = read.contents[0].text
                assert '"id":"c-7"' in record and "[REDACTED:card:****1111]" in record, record
                assert str(read.contents[0].uri) == "toolgate://crm/crm://customers/c-7"
                got = await client.get_prompt("crm__summarize_customer", {"customer_id": "c-42"})
                text = got.messages[0].content.text
                assert "c-42" in text and "4111 1111 1111 1111" not in text, text

        async def billing():
            async with sdk_client_cm(f"{demo.url}/mcp", "tg_demo_billing_key", "auto") as client:
                assert (await client.list_resources()).resources == []
                await refused(client.read_resource(uri), RESOURCE_NOT_FOUND)

        anyio.run(support)
        anyio.run(billing)


def test_prompts_and_resources_are_attached_through_the_admin_api(make_gate, docs):
    from harness import free_port, new_api_key, wait_for_port
    from test_admin_api import Admin, admin_toml

    token, sha = new_api_key()
    port = free_port()
    reader = Agent("reader", ["docs__search"])
    gate = make_gate(upstream_list=[UpstreamCfg("docs", docs.url)], agents=[reader],
                     extra_toml=admin_toml(port, sha))
    wait_for_port(port, 30, gate.proc)
    admin = Admin(port, token)
    try:
        async def visible() -> tuple[list[str], list[str]]:
            async with sdk_client_cm(gate.url, reader.key, "legacy") as client:
                prompts = [p.name for p in (await client.list_prompts()).prompts]
                uris = sorted(str(r.uri) for r in (await client.list_resources()).resources)
                return prompts, uris

        assert anyio.run(visible) == ([], [])
        doc = {"tools": ["docs__search"], "prompts": ["docs__summarize"],
               "resources": ["toolgate://docs/file:///public/*"]}
        r = admin.put("agents/reader", doc)
        assert r.status_code in (200, 201), r.text
        assert anyio.run(visible) == (["docs__summarize"], [PLAN, README])
        assert admin.get("agents/reader").json()["spec"]["prompts"] == ["docs__summarize"]

        version = admin.version("agents/reader")
        bad = admin.put("agents/reader", {**doc, "resources": ["toolgate://nope/*"]}, version)
        assert bad.status_code == 422 and "names no configured upstream" in bad.text, bad.text
        r = admin.put("agents/reader", {"tools": ["docs__search"]}, version)
        assert r.status_code == 200, r.text
        assert anyio.run(visible) == ([], [])
    finally:
        admin.close()
