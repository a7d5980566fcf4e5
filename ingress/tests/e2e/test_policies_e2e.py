"""Cedar policies end to end: the policy examples of docs/policies.md (shipped
in ``policies/examples/policies``) decide real SDK calls through toolgate.

    SDK client (agent key, optional Toolgate-On-Behalf-Of user)
        -> toolgate (permission map, then Cedar; @judge escalations)
            -> crm (JSON) / ops (SSE) SDK upstreams
            -> judge (an HTTP reviewer written here)
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import HOST, Agent, Gate, UpstreamCfg, UpstreamProc, free_port, modern_headers, modern_request, result_json, toml_value

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_POLICIES = REPO / "policies" / "examples" / "policies"
FORBIDDEN = -32003
SCENARIO_TIMEOUT_S = 90


class Judge:
    """A reviewer: allows refunds whose order id starts with ``ok``, records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                judge.requests.append(body)
                ok = str(body.get("arguments", {}).get("order_id", "")).startswith("ok")
                out = json.dumps({"decision": "allow" if ok else "deny"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer((HOST, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/judge"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PolicyGate(Gate):
    """A gate with agent groups, users, the example policies and a judge."""

    def __init__(self, workdir: Path, upstreams, agents, extra: dict, judge_url: str) -> None:
        self.extra = extra
        self.judge_url = judge_url
        self.policy_dir = workdir / "policies"
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(EXAMPLE_POLICIES, self.policy_dir, dirs_exist_ok=True)
        super().__init__(workdir, upstreams, agents, {"shards": 2})

    def render_config(self) -> str:
        lines = ["[server]", f"listen = {toml_value(f'{HOST}:{self.port}')}", "shards = 2"]
        for up in self.upstreams:
            lines += ["", "[[upstreams]]", f"name = {toml_value(up.name)}", f"url = {toml_value(up.url)}", "timeout_ms = 10000"]
        for a in self.agents.values():
            groups, act = self.extra[a.id]
            lines += [
                "",
                "[[agents]]",
                f"id = {toml_value(a.id)}",
                f"api_key_sha256 = {toml_value(a.key_sha256)}",
                f"tools = {toml_value(a.tools)}",
                f"groups = {toml_value(groups)}",
                f"act_for_users = {toml_value(act)}",
            ]
        lines += ["", "[[users]]", 'id = "alice"', 'groups = ["admins"]', "", "[[users]]", 'id = "bob"']
        lines += ["", "[policies]", 'files = ["policies"]', "", "[policies.judge]", f"url = {toml_value(self.judge_url)}", "timeout_ms = 2000"]
        lines += ["", "[audit]", 'dir = "audit"', ""]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def ops_upstream(tmp_path_factory):
    proc = UpstreamProc("ops", "sse")
    proc.start(tmp_path_factory.mktemp("ops-logs"))
    yield proc
    proc.stop()


@pytest.fixture
def judge():
    j = Judge()
    yield j
    j.stop()


@pytest.fixture
def gate(tmp_path, upstreams, ops_upstream, judge):
    agents = [
        Agent("support-bot", ["crm__lookup_customer", "crm__delete_record", "ops__send_email"]),
        Agent("intern-bot", ["crm__lookup_customer", "crm__delete_record"]),
        Agent("billing-bot", ["ops__refund", "ops__send_email"]),
    ]
    extra = {"support-bot": (["support"], True), "intern-bot": (["support"], True), "billing-bot": (["billing"], False)}
    ups = [UpstreamCfg("crm", upstreams["crm"].url), UpstreamCfg("ops", ops_upstream.url)]
    g = PolicyGate(tmp_path / "gate", ups, agents, extra, judge.url)
    g.start()
    yield g
    g.stop()


@asynccontextmanager
async def client(url: str, key: str, user: str | None = None, mode: str = "2026-07-28"):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {key}"}
    if user is not None:
        headers["Toolgate-On-Behalf-Of"] = user
    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(10.0, read=30.0))
    async with http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=20.0) as c:
            yield c


async def denied(c, tool: str, args: dict) -> MCPError:
    with pytest.raises(MCPError) as info:
        await c.call_tool(tool, args)
    assert info.value.code == FORBIDDEN, f"{tool}: {info.value.code} {info.value.message}"
    return info.value


def calls(gate: Gate, count: int) -> list[dict]:
    return gate.audit_lines(count=count, where=lambda l: l["method"] == "tools/call")


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_readme_policy_examples_decide_sdk_calls(gate, mode):
    a = gate.agents

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with client(gate.url, a["support-bot"].key, mode=mode) as c:
                r = await c.call_tool("crm__lookup_customer", {"customer_id": "C-1"})
                assert result_json(r)["id"] == "C-1"
                # no user behind the call: the admins-only permit cannot match
                await denied(c, "crm__delete_record", {"record_id": "R-1"})
                # argument condition
                r = await c.call_tool("ops__send_email", {"to": "ada@example.com", "subject": "hi"})
                assert "ada@example.com" in r.content[0].text
                e = await denied(c, "ops__send_email", {"to": "eve@evil.test", "subject": "hi"})
                assert "policy" in e.message.lower() and "mail-internal-only" not in e.message
            async with client(gate.url, a["support-bot"].key, user="alice", mode=mode) as c:
                r = await c.call_tool("crm__delete_record", {"record_id": "R-2"})
                assert result_json(r) == "deleted R-2"
            async with client(gate.url, a["support-bot"].key, user="bob", mode=mode) as c:
                await denied(c, "crm__delete_record", {"record_id": "R-3"})
            # forbid overrides the admin permit
            async with client(gate.url, a["intern-bot"].key, user="alice", mode=mode) as c:
                await denied(c, "crm__delete_record", {"record_id": "R-4"})
            # an agent without act_for_users may not name a user
            async with client(gate.url, a["billing-bot"].key, user="alice", mode=mode) as c:
                await denied(c, "ops__send_email", {"to": "ada@example.com", "subject": "x"})

    anyio.run(scenario)
    lines = calls(gate, 8)
    by = lambda agent, decision: [l for l in lines if l["agent"] == agent and l["decision"] == decision]
    assert {l["tool"] for l in by("support-bot", "allow")} == {"crm__lookup_customer", "ops__send_email", "crm__delete_record"}
    evil = [l for l in lines if l["tool"] == "ops__send_email" and l["decision"] == "deny" and l["agent"] == "support-bot"]
    assert evil[0]["reason"] == "forbidden_by_policy" and evil[0]["policies"] == ["mail-internal-only"]
    intern = by("intern-bot", "deny")[0]
    assert intern["policies"] == ["no-delete-for-intern"] and intern["user"] == "alice" and intern["status"] == 403
    alice = [l for l in lines if l["tool"] == "crm__delete_record" and l["user"] == "alice" and l["agent"] == "support-bot"]
    assert alice[0]["decision"] == "allow" and alice[0]["policies"] == ["delete-admins-only"]
    assert by("billing-bot", "deny")[0]["reason"] == "user_assertion_refused"


def test_judge_is_called_and_obeyed_and_its_absence_denies(gate, judge):
    key = gate.agents["billing-bot"].key

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with client(gate.url, key) as c:
                r = await c.call_tool("ops__refund", {"order_id": "small-1", "amount": 120})
                assert result_json(r) == {"order_id": "small-1", "refunded": 120}
                assert judge.requests == [], "small refunds never reach the judge"
                r = await c.call_tool("ops__refund", {"order_id": "ok-2", "amount": 900})
                assert result_json(r) == {"order_id": "ok-2", "refunded": 900}
                await denied(c, "ops__refund", {"order_id": "no-3", "amount": 900})
                assert [q["arguments"]["order_id"] for q in judge.requests] == ["ok-2", "no-3"]
                asked = judge.requests[0]
                assert asked["agent"] == "billing-bot" and asked["tool"] == "ops__refund"
                assert asked["policies"] == ["refund-large"]
                judge.stop()
                await denied(c, "ops__refund", {"order_id": "ok-4", "amount": 900})

    anyio.run(scenario)
    lines = calls(gate, 4)
    outcomes = [(l["decision"], (l.get("judge") or {}).get("outcome")) for l in lines]
    assert outcomes == [("allow", None), ("allow", "allow"), ("deny", "deny"), ("deny", "unavailable")]
    assert lines[1]["reason"] == "allowed_by_judge" and lines[1]["judge"]["latency_us"] > 0


def test_soar_judge_rules_alert_on_escalations_with_their_outcome(tmp_path, upstreams, ops_upstream, judge):
    """A `soar` sink's `judge` rules see every escalation, filtered by outcome."""
    from siem_receiver import Receiver

    hook = Receiver().start()

    class SoarGate(PolicyGate):
        def render_config(self) -> str:
            return super().render_config() + "\n".join([
                "", "[[audit.sinks]]", 'name = "soar"', 'kind = "soar"',
                f"url = {toml_value(hook.url + '/alerts')}", "poll_interval_ms = 50",
                "", "[[audit.sinks.rules]]", 'name = "judge-refused"', 'kind = "judge"',
                'judge_outcomes = ["deny", "unavailable"]',
                "", "[[audit.sinks.rules]]", 'name = "judged"', 'kind = "judge"', "",
            ])

    agents = [Agent("billing-bot", ["ops__refund", "ops__send_email"])]
    ups = [UpstreamCfg("crm", upstreams["crm"].url), UpstreamCfg("ops", ops_upstream.url)]
    g = SoarGate(tmp_path / "gate", ups, agents, {"billing-bot": (["billing"], False)}, judge.url)
    g.start()
    try:
        key = g.agents["billing-bot"].key

        async def scenario():
            with anyio.fail_after(SCENARIO_TIMEOUT_S):
                async with client(g.url, key) as c:
                    await c.call_tool("ops__refund", {"order_id": "small-1", "amount": 120})
                    await c.call_tool("ops__refund", {"order_id": "ok-2", "amount": 900})
                    await denied(c, "ops__refund", {"order_id": "no-3", "amount": 900})

        anyio.run(scenario)
        lines = calls(g, 3)
        deadline = time.monotonic() + 15
        while len(hook.stored) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        got = sorted((a["rule"], a["log_seq"], a["judge_outcome"], a["decision"]) for a in hook.stored)
        assert got == sorted([
            ("judged", lines[1]["log_seq"], "allow", "allow"),
            ("judged", lines[2]["log_seq"], "deny", "deny"),
            ("judge-refused", lines[2]["log_seq"], "deny", "deny"),
        ]), hook.stored
        assert all(a["kind"] == "judge" and a["agent"] == "billing-bot" and a["tool"] == "ops__refund"
                   for a in hook.stored)
    finally:
        g.stop()
        hook.stop()


def test_reload_under_traffic_changes_decisions_without_failed_calls(gate):
    support = gate.agents["support-bot"]
    stop = threading.Event()
    results: list[int] = []

    def traffic() -> None:
        with httpx.Client(timeout=10.0) as http:
            i = 0
            while not stop.is_set():
                i += 1
                body = modern_request("tools/call", {"name": "crm__lookup_customer", "arguments": {"customer_id": f"C-{i}"}}, id=i)
                r = http.post(gate.url, json=body, headers=modern_headers("tools/call", "crm__lookup_customer", support.key))
                results.append(r.status_code)

    def send_evil() -> int:
        body = modern_request("tools/call", {"name": "ops__send_email", "arguments": {"to": "eve@evil.test", "subject": "s"}})
        r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "ops__send_email", support.key), timeout=10.0)
        return r.status_code

    assert send_evil() == 403
    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    # Drop the forbid: the same call must become allowed, with no call failing meanwhile.
    (gate.policy_dir / "mail.cedar").write_text(
        '@id("mail-send")\npermit(principal, action == Toolgate::Action::"ops__send_email", resource);\n'
    )
    deadline = time.monotonic() + 10
    status = 403
    while time.monotonic() < deadline and status != 200:
        time.sleep(0.2)
        status = send_evil()
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(timeout=15)
    assert status == 200, f"decision did not change after reload:\n{gate.stderr_text()}"
    assert len(results) > 20
    assert set(results) == {200}, f"calls failed during reload: {sorted(set(results))}"

    # A broken policy file is refused and the running policies stay.
    (gate.policy_dir / "mail.cedar").write_text("permit(principal, action resource);\n")
    time.sleep(2.5)
    assert send_evil() == 200
    assert "reload refused" in gate.stderr_text()


def test_policy_cli_validates_against_live_catalogs_and_runs_cases(gate):
    from harness import TOOLGATE_BIN
    import subprocess

    def tg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(TOOLGATE_BIN), *args], capture_output=True, text=True, timeout=60)

    ok = tg("policy", "validate", "-c", str(gate.config_path))
    assert ok.returncode == 0, ok.stderr
    assert "policies ok: 7 policies" in ok.stdout

    # An argument the tool does not have fails validation, with file and line.
    (gate.policy_dir / "mail.cedar").write_text(
        '@id("mail-send")\npermit(principal, action == Toolgate::Action::"ops__send_email", resource)\n'
        'when { context.args.cc == "x" };\n'
    )
    bad = tg("policy", "validate", "-c", str(gate.config_path))
    assert bad.returncode != 0
    assert "mail.cedar: line 3:" in bad.stderr and "args.cc" in bad.stderr, bad.stderr

    # A syntax error is caught by `check`, with its line.
    (gate.policy_dir / "mail.cedar").write_text("permit(principal, action, resource);\n\nforbid(principal action, resource);\n")
    broken = tg("check", "-c", str(gate.config_path))
    assert broken.returncode != 0
    assert "mail.cedar: line 3:" in broken.stderr, broken.stderr

    examples = REPO / "policies" / "examples"
    cases = tg("policy", "test", "-c", str(examples / "policy-demo.toml"), str(examples / "policy-tests" / "readme-examples.toml"))
    assert cases.returncode == 0, cases.stdout + cases.stderr
    assert "10 passed, 0 failed" in cases.stdout
