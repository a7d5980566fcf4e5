"""Upstreams as admin resources, end to end: an SDK upstream started while
toolgate runs is added through the admin API while an SDK client is
connected, one of its tools granted to the agent; the client's next
``tools/list`` shows it and a call succeeds. Deleting the upstream is
refused while the tool is attached (409, naming the agent); after the
revoke the delete goes through and the call is refused. No restart.
"""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import (
    INVALID_PARAMS,
    MODERN_VERSION,
    UpstreamProc,
    modern_headers,
    modern_request,
    result_json,
    sdk_client_cm,
)
from test_admin_api import admin_gate, err  # noqa: F401  (fixture)

TOOL = "ops__refund"


@pytest.fixture
def ops(tmp_path):
    logs = tmp_path / "ops-logs"
    logs.mkdir()
    proc = UpstreamProc("ops", "json").start(logs)
    yield proc
    proc.stop()


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
def test_upstream_added_granted_and_removed_while_sdk_client_runs(admin_gate, ops, mode):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    assert admin.get("upstreams/ops").status_code == 404
    # The file's upstreams read as version 0, from the config.
    crm = admin.get("upstreams/crm").json()
    assert crm["source"] == "config" and crm["version"] == 0 and crm["spec"]["url"].startswith("http://")

    async def scenario() -> None:
        with anyio.fail_after(90):
            async with sdk_client_cm(gate.url, bot.key, mode) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert TOOL not in names

                def add_and_grant() -> None:
                    r = admin.put("upstreams/ops", {"url": ops.url, "timeout_ms": 5000})
                    assert r.status_code == 200, r.text
                    assert r.json()["shards"]["pending"] == []
                    up = admin.get("upstreams/ops").json()
                    assert up["source"] == "store" and up["spec"] == {"url": ops.url, "timeout_ms": 5000}
                    version = admin.version("agents/support-bot")
                    r = admin.put("agents/support-bot", {"tools": ["crm__lookup_customer", TOOL]}, version)
                    assert r.status_code == 200, r.text

                await anyio.to_thread.run_sync(add_and_grant)
                # The catalog is fetched off the request path: the tool shows
                # up in the client's next listings, once fetched.
                deadline = time.monotonic() + 15
                while True:
                    names = {t.name for t in (await client.list_tools()).tools}
                    if TOOL in names or time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.1)
                assert TOOL in names and "crm__lookup_customer" in names
                result = await client.call_tool(TOOL, {"order_id": "O-7", "amount": 12})
                assert result_json(result) == {"order_id": "O-7", "refunded": 12}

                def delete_refused_then_revoke_and_delete() -> None:
                    version = admin.version("upstreams/ops")
                    e = err(admin.delete("upstreams/ops", version), 409, "upstream_in_use")
                    assert e["agents"] == ["support-bot"] and e["tools"] == [TOOL]
                    assert admin.version("upstreams/ops") == version, "nothing applied"
                    # Revoke and delete in one transaction.
                    agent_version = admin.version("agents/support-bot")
                    r = admin.http.post(f"{admin.base}/transaction", json={"operations": [
                        {"op": "put", "kind": "agents", "id": "support-bot", "if_match": agent_version,
                         "spec": {"tools": ["crm__lookup_customer"]}},
                        {"op": "delete", "kind": "upstreams", "id": "ops", "if_match": version},
                    ]})
                    assert r.status_code == 200, r.text
                    assert admin.get("upstreams/ops").status_code == 404

                await anyio.to_thread.run_sync(delete_refused_then_revoke_and_delete)
                with pytest.raises(MCPError) as refused:
                    await client.call_tool(TOOL, {"order_id": "O-8", "amount": 1})
                assert refused.value.code == INVALID_PARAMS
                names = {t.name for t in (await client.list_tools()).tools}
                assert TOOL not in names and "crm__lookup_customer" in names
                # The connection keeps working for the file's upstreams.
                await client.call_tool("crm__lookup_customer", {"customer_id": "C-1"})

    anyio.run(scenario)
    # Granting a tool of a deleted upstream is a bad reference again.
    version = admin.version("agents/support-bot")
    err(admin.put("agents/support-bot", {"tools": [TOOL]}, version), 422, "invalid_reference")
    # Every change is an audit record.
    changes = [(r["admin"]["op"], r["admin"]["kind"], r["admin"]["id"])
               for r in gate.read_audit() if r.get("admin") and r["decision"] == "allow"]
    assert ("put", "upstreams", "ops") in changes and ("delete", "upstreams", "ops") in changes


def test_upstream_credential_by_reference_is_injected(admin_gate, tmp_path):
    logs = tmp_path / "vault-logs"
    logs.mkdir()
    vault = UpstreamProc("vault", "json").start(logs)
    try:
        gate, admin, agents = admin_gate()
        bot = agents["support-bot"]
        secret = tmp_path / "vault.token"
        secret.write_text("s3cret-value\n")
        doc = {"url": vault.url, "credential": {"file": str(secret), "value_prefix": "Bearer "}}
        r = admin.put("upstreams/vault", doc)
        assert r.status_code == 200, r.text
        assert "s3cret" not in admin.get("upstreams/vault").text
        r = admin.put("agents/support-bot", {"tools": ["crm__lookup_customer", "vault__whoami"]},
                      admin.version("agents/support-bot"))
        assert r.status_code == 200, r.text
        body = modern_request("tools/call", {"name": "vault__whoami", "arguments": {}})
        r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "vault__whoami", bot.key),
                       timeout=10.0)
        assert r.status_code == 200, r.text
        assert "Bearer s3cret-value" in r.text
        audit = [r for r in gate.read_audit() if r.get("admin")]
        assert "s3cret" not in str(audit)
    finally:
        vault.stop()


def test_bad_upstreams_are_refused_and_change_nothing(admin_gate, tmp_path):
    gate, admin, _ = admin_gate()
    cases = [
        ({"url": "ftp://127.0.0.1:1/mcp"}, 422, "invalid_upstream"),
        ({"url": "http://user:pw@127.0.0.1:1/mcp"}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp?x=1"}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp", "timeout_ms": 0}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp", "ca_file": "ca.pem"}, 422, "invalid_upstream"),
        ({"url": "https://127.0.0.1:1/mcp", "ca_file": "missing.pem"}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp", "prefix": "crm"}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp", "prefix": "a__b"}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp", "credential": {"env": "TOOLGATE_TEST_UNSET_VAR"}}, 422, "invalid_upstream"),
        ({"url": "http://127.0.0.1:1/mcp", "credential": {"command": ["cat", "/etc/passwd"]}}, 400, "invalid_document"),
        ({"url": "http://127.0.0.1:1/mcp", "credential": {"env": "A", "file": "b"}}, 422, "invalid_document"),
        ({"url": "http://127.0.0.1:1/mcp", "credential": {"value": "secret"}}, 400, "invalid_document"),
        ({"url": "http://127.0.0.1:1/mcp", "name": "x"}, 400, "invalid_document"),
    ]
    for doc, status, code in cases:
        err(admin.put("upstreams/new", doc), status, code)
    err(admin.put("upstreams/bad name", {"url": "http://127.0.0.1:1/mcp"}), 400, "invalid_request")
    assert admin.get("upstreams/new").status_code == 404
    # The file's upstream cannot be deleted through the API.
    err(admin.delete("upstreams/crm", 0), 409, "defined_in_config_file")
    assert [u["id"] for u in admin.get("upstreams").json()["items"]] == ["crm", "tickets"]


def whoami(gate, agent) -> httpx.Response:
    body = modern_request("tools/call", {"name": "vault__whoami", "arguments": {}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "vault__whoami", agent.key),
                      timeout=10.0)


def test_named_credential_is_referenced_rotated_and_kept_while_in_use(admin_gate, tmp_path):
    logs = tmp_path / "vault-logs"
    logs.mkdir()
    vault = UpstreamProc("vault", "json").start(logs)
    try:
        gate, admin, agents = admin_gate()
        bot = agents["support-bot"]
        first, second = tmp_path / "first.token", tmp_path / "second.token"
        first.write_text("first-token\n")
        second.write_text("second-token\n")
        doc = {"url": vault.url, "credential": "vault-token"}
        e = err(admin.put("upstreams/vault", doc), 422, "invalid_upstream")
        assert "credentials/vault-token" in e["message"]
        r = admin.put("credentials/vault-token", {"file": str(first), "value_prefix": "Bearer "})
        assert r.status_code == 200, r.text
        assert admin.get("credentials/vault-token").json()["spec"] == {"file": str(first), "value_prefix": "Bearer "}
        assert admin.put("upstreams/vault", doc).status_code == 200
        r = admin.put("agents/support-bot", {"tools": ["crm__lookup_customer", "vault__whoami"]},
                      admin.version("agents/support-bot"))
        assert r.status_code == 200, r.text
        r = whoami(gate, bot)
        assert r.status_code == 200 and "Bearer first-token" in r.text, r.text

        version = admin.version("credentials/vault-token")
        e = err(admin.delete("credentials/vault-token", version), 409, "credential_in_use")
        assert e["upstreams"] == ["vault"]
        # A source that cannot be read is refused while an upstream names it.
        err(admin.put("credentials/vault-token", {"file": str(tmp_path / "missing")}, version), 422,
            "invalid_upstream")
        # Pointing the credential elsewhere: the upstream's clients follow.
        r = admin.put("credentials/vault-token", {"file": str(second), "value_prefix": "Bearer "}, version)
        assert r.status_code == 200, r.text
        r = whoami(gate, bot)
        assert r.status_code == 200 and "Bearer second-token" in r.text, r.text
        # A rotated file is read again when the credential is written again, unchanged.
        second.write_text("third-token\n")
        r = admin.put("credentials/vault-token", {"file": str(second), "value_prefix": "Bearer "},
                      admin.version("credentials/vault-token"))
        assert r.status_code == 200, r.text
        r = whoami(gate, bot)
        assert r.status_code == 200 and "Bearer third-token" in r.text, r.text
        audit = [r for r in gate.read_audit() if r.get("admin")]
        assert "first-token" not in json.dumps(audit) and "second-token" not in json.dumps(audit)
    finally:
        vault.stop()
