"""stdio upstreams end to end: toolgate starts MCP servers as child
processes inside a bubblewrap sandbox and speaks JSON-RPC to them over
stdin/stdout.

    SDK client (agent key)
        -> toolgate (attachments, Cedar, output rules, audit)
            -> bwrap -> node server-filesystem / server-everything
                        (the reference servers, installed by scripts/test in .npm)
            -> bwrap -> python stdio_probe_server.py
                        (reports from the inside what its sandbox lets it do)

The reference servers are called through the whole boundary (a policy on
their arguments, an output rule on their results). The probe checks the
confinement: no network, no file outside the declared paths, no variable of
toolgate's environment, the resource limits, an unprivileged uid. Faults
(out of memory, kill -9, a hung process, a command exiting at once) fail
calls fast as "upstream unavailable", are audited, restart the process with
backoff and show in ``/readyz`` and the metrics; no child outlives toolgate.

Each probe is started with a ``--tag=...`` argument (which it ignores) so
its processes -- bwrap's and the interpreter's -- can be found in /proc.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from certs import issue, make_ca
from conftest import ACTIVE_GATES, release_gate
from harness import (
    E2E_DIR,
    HOST,
    INTERNAL_ERROR,
    TOOLGATE_BIN,
    Agent,
    Gate,
    audit_segments,
    check_audit_line_shape,
    free_port,
    modern_headers,
    modern_request,
    result_json,
    scrape,
    sdk_client_cm,
    toml_value,
)

PYTHON = Path(sys.executable)  # the venv's interpreter, a symlink into the base installation
PROBE = E2E_DIR / "stdio_probe_server.py"
PROBE_TOOLS = ["connect", "fetch", "read_file", "getenv", "limits", "allocate", "sleep", "echo", "instance"]

NODE = "/usr/bin/node"
NPM_DIR = E2E_DIR / ".npm"
NPM_SERVERS = NPM_DIR / "node_modules" / "@modelcontextprotocol"
FILESYSTEM_JS = NPM_SERVERS / "server-filesystem" / "dist" / "index.js"
EVERYTHING_JS = NPM_SERVERS / "server-everything" / "dist" / "index.js"

NOBODY = 65534
MIB = 1024 * 1024
FORBIDDEN = -32003
# A call whose process died (or is down) must fail within this.
UNAVAILABLE_S = 5.0
# Restarts back off from 0.5 s: a restarted process serves again within this.
RESTART_TIMEOUT_S = 15.0
SCENARIO_TIMEOUT_S = 90
LOG_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 15.0

LEAK = "leaked-" + secrets.token_hex(4)


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` with every Path made a string (for :func:`toml_value`)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def stdio_upstream_toml(name: str, command: list, env: dict[str, Any] | None = None,
                        sandbox: dict[str, Any] | None = None, **options: Any) -> str:
    """One ``[[upstreams]]`` entry of ``kind = "stdio"``: ``command`` (argv),
    ``env`` (an inline table: literal values or ``{ env = ... }`` / ``{ file = ... }``),
    the other keys (``timeout_ms``, ``ping_interval_s``...) and ``[upstreams.sandbox]``."""
    lines = ["", "[[upstreams]]", f"name = {toml_value(name)}", 'kind = "stdio"',
             f"command = {toml_value(_plain(command))}"]
    lines += [f"{k} = {toml_value(_plain(v))}" for k, v in options.items()]
    if env is not None:
        lines.append(f"env = {toml_value(_plain(env))}")
    if sandbox is not None:
        lines.append("[upstreams.sandbox]")
        lines += [f"{k} = {toml_value(_plain(v))}" for k, v in sandbox.items()]
    return "\n".join(lines) + "\n"


def http_upstream_toml(name: str, url: str) -> str:
    return f"\n[[upstreams]]\nname = {toml_value(name)}\nurl = {toml_value(url)}\n"


def python_read_only() -> list[str]:
    """What a sandbox must show read-only for :data:`PYTHON` to run: the venv
    (the ``python`` symlink, site-packages) and the installation it points
    into (``sys.base_prefix``, e.g. a pyenv version under /root), plus the
    real interpreter's directory should it lie elsewhere. /usr is always
    visible, so nothing under it is listed."""
    paths = [Path(sys.prefix), Path(sys.base_prefix)]
    real_dir = Path(os.path.realpath(sys.executable)).parent
    if not any(real_dir == p or p in real_dir.parents for p in paths):
        paths.append(real_dir)
    usr = Path("/usr")
    return list(dict.fromkeys(str(p) for p in paths if p != usr and usr not in p.parents))


def probe_sandbox(read_only: list = (), **options: Any) -> dict[str, Any]:
    """``[upstreams.sandbox]`` for the probe: the interpreter's paths and the
    e2e directory (the script) read-only, plus ``read_only``; other keys as given."""
    return {"read_only": python_read_only() + [str(E2E_DIR)] + [str(p) for p in read_only], **options}


def new_tag(name: str) -> str:
    """A probe argument unique to this run, to find its processes in /proc."""
    return f"--tag={name}-{secrets.token_hex(6)}"


def probe_command(tag: str) -> list[str]:
    return [str(PYTHON), str(PROBE), tag]


def probe_upstream_toml(name: str, tag: str, env: dict[str, Any] | None = None,
                        sandbox: dict[str, Any] | None = None, **options: Any) -> str:
    """The probe as stdio upstream ``name`` (sandboxed by :func:`probe_sandbox` unless told)."""
    options.setdefault("timeout_ms", 20000)
    return stdio_upstream_toml(name, probe_command(tag), env=env,
                               sandbox=probe_sandbox() if sandbox is None else sandbox, **options)


def probe_agent(*upstreams: str) -> Agent:
    """``probe-bot``, attached to every probe tool of each named upstream."""
    return Agent("probe-bot", [f"{u}__{t}" for u in upstreams for t in PROBE_TOOLS])


def require_npm_servers() -> None:
    for js in (FILESYSTEM_JS, EVERYTHING_JS):
        assert js.is_file(), f"{js} missing: scripts/test installs the reference servers into {NPM_DIR}"


# --------------------------------------------------------------------------
# the gate
# --------------------------------------------------------------------------


class StdioGate(Gate):
    """A gate whose upstreams are given as TOML (stdio ones, and others),
    with a metrics listener, run with extra environment variables."""

    def __init__(self, workdir: Path, agents: list[Agent], upstreams_toml: str, env: dict[str, str] | None = None,
                 extra_toml: str = "") -> None:
        self.env = dict(env or {})
        self.metrics_port = free_port()
        extra = f"[metrics]\nlisten = {toml_value(f'{HOST}:{self.metrics_port}')}\n{upstreams_toml}\n{extra_toml}"
        super().__init__(workdir, [], agents, extra_toml=extra)

    def spawn(self) -> "StdioGate":
        """As :meth:`Gate.spawn`, with ``self.env`` laid over the environment."""
        assert TOOLGATE_BIN.exists(), f"toolgate binary not found at {TOOLGATE_BIN} (build it or set TOOLGATE_BIN)"
        elsewhere = self.workdir / "cwd"
        elsewhere.mkdir(exist_ok=True)
        err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([str(TOOLGATE_BIN), "run", "-c", str(self.config_path)], stdout=err,
                                     stderr=err, stdin=subprocess.DEVNULL, cwd=elsewhere,
                                     env={**os.environ, **self.env})
        err.close()
        return self

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.base}/readyz", timeout=2.0)


@pytest.fixture
def stdio_gate(tmp_path: Path):
    """Factory: ``stdio_gate(upstreams_toml, agents, env=None, extra_toml="", files=None, start=True) -> StdioGate``.

    ``files`` (name -> text) are written beside the config before toolgate
    starts. Every gate is stopped (by its pid) at teardown."""
    gates: list[StdioGate] = []

    def factory(upstreams_toml: str, agents: list[Agent], env: dict[str, str] | None = None, extra_toml: str = "",
                files: dict[str, str] | None = None, start: bool = True) -> StdioGate:
        gate = StdioGate(tmp_path / f"gate{len(gates)}", agents, upstreams_toml, env, extra_toml)
        for name, text in (files or {}).items():
            (gate.workdir / name).write_text(text)
        gates.append(gate)
        ACTIVE_GATES.append(gate)
        if start:
            gate.start()
        return gate

    yield factory
    for g in gates:
        release_gate(g)


# --------------------------------------------------------------------------
# metrics, log, audit
# --------------------------------------------------------------------------


def stdio_metric(gate: StdioGate, metric: str, upstream: str) -> float | None:
    """The value of ``metric{upstream="..."}`` (None while it is not exported)."""
    for key, value in scrape(gate.metrics_port).items():
        name, _, labels = key.partition("{")
        if name == metric and f'upstream="{upstream}"' in labels:
            return value
    return None


def wait_for_metric(gate: StdioGate, metric: str, upstream: str, ok: Callable[[float], bool],
                    timeout: float = RESTART_TIMEOUT_S) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = stdio_metric(gate, metric, upstream)
        if value is not None and ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'{metric}{{upstream="{upstream}"}} is {value} after {timeout}s')
        time.sleep(0.1)


def log_lines_with(gate: Gate, *needles: str, timeout: float = LOG_TIMEOUT_S) -> list[str]:
    """Lines of toolgate's log holding every needle (polled until there is one)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [l for l in gate.stderr_text().splitlines() if all(n in l for n in needles)]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def assert_unavailable_lines(gate: Gate, tool: str, upstream: str, count: int = 1) -> list[dict]:
    """The audit records of ``count`` calls of ``tool`` that failed as upstream unavailable."""
    lines = gate.audit_lines(count, where=lambda l: l["tool"] == tool and l["outcome"] != "success")
    for line in lines:
        check_audit_line_shape(line)
        assert line["upstream"] == upstream, line
        assert (line["decision"], line["outcome"], line["reason"], line["status"], line["error_code"]) == (
            "allow", "failure", "upstream_unavailable", 502, INTERNAL_ERROR), line
    return lines


# --------------------------------------------------------------------------
# the SDK client
# --------------------------------------------------------------------------


def text_of(result: Any) -> str:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    assert texts, f"no text content in {result!r}"
    return texts[0]


async def call_text(client: Any, tool: str, args: dict[str, Any] | None = None, **options: Any) -> str:
    result = await client.call_tool(tool, args or {}, **options)
    assert not result.is_error, result
    return text_of(result)


async def expect_unavailable(client: Any, tool: str, args: dict[str, Any]) -> float:
    """Call ``tool``, which must fail with the gateway's upstream-unavailable
    error; returns how long that took."""
    started = time.monotonic()
    with pytest.raises(MCPError) as info:
        await client.call_tool(tool, args)
    elapsed = time.monotonic() - started
    assert info.value.code == INTERNAL_ERROR, f"{tool}: {info.value.code} {info.value.message}"
    assert "unavailable" in info.value.message.lower(), info.value.message
    return elapsed


async def until_serving(client: Any, tool: str, args: dict[str, Any], timeout: float = RESTART_TIMEOUT_S) -> str:
    """Call ``tool`` until it succeeds (the process restarted); its text."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call_text(client, tool, args)
        except MCPError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{tool} still failing after {timeout}s: {e.code} {e.message}") from e
        await anyio.sleep(0.25)


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """The state letter of a process (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def proc_alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def tagged_processes(tag: str) -> dict[int, str]:
    """Live processes whose command line holds the probe script and ``tag``
    (bwrap's and the interpreter's), pid -> comm."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(PROBE).encode() in argv and tag.encode() in argv and proc_alive(int(entry.name)):
            out[int(entry.name)] = proc_comm(int(entry.name))
    return out


def probe_interpreter_pid(tag: str, timeout: float = 10.0) -> int:
    """The pid of the probe's Python process (not bwrap's) -- exactly one."""
    deadline = time.monotonic() + timeout
    while True:
        found = {pid: comm for pid, comm in tagged_processes(tag).items() if comm.startswith("python")}
        if len(found) == 1:
            return next(iter(found))
        if time.monotonic() > deadline:
            raise AssertionError(f"expected one probe interpreter tagged {tag}, found {tagged_processes(tag)}")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# a. the reference filesystem server
# --------------------------------------------------------------------------

FILES_POLICY = """
@id("files-bot-may-use-files")
permit(principal == Toolgate::Agent::"files-bot", action, resource);

@id("no-secret-files")
forbid(principal, action == Toolgate::Action::"files__read_text_file", resource)
when { context.args.path like "*secret*" };
"""

FILES_RULES = """
[policies]
files = ["policy.cedar"]

[[output_rules]]
name = "staff-ids"
tools = ["files__read_text_file"]
patterns = [{ name = "employee_id", regex = 'EMP-[0-9]{6}' }]
"""

FILES_TOOLS = ["files__read_text_file", "files__list_directory", "files__write_file"]


def test_filesystem_server_through_policy_and_output_rules(stdio_gate, tmp_path):
    require_npm_servers()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "notes.txt").write_text("meeting notes: ship it\n")
    (shared / "secret-plan.txt").write_text("the secret plan is 42\n")
    (shared / "staff.txt").write_text("on call: EMP-204816 (Ada)\n")
    agent = Agent("files-bot", FILES_TOOLS)
    upstream = stdio_upstream_toml("files", [NODE, FILESYSTEM_JS, shared], timeout_ms=20000,
                                   sandbox={"read_only": [NPM_DIR], "read_write": [shared]})
    gate = stdio_gate(upstream, [agent], extra_toml=FILES_RULES, files={"policy.cedar": FILES_POLICY})

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                assert sorted(t.name for t in (await client.list_tools()).tools) == sorted(FILES_TOOLS)

                assert await call_text(client, "files__read_text_file",
                                       {"path": str(shared / "notes.txt")}) == "meeting notes: ship it\n"
                listing = await call_text(client, "files__list_directory", {"path": str(shared)})
                assert "[FILE] notes.txt" in listing and "[FILE] secret-plan.txt" in listing, listing

                with pytest.raises(MCPError) as denied:
                    await client.call_tool("files__read_text_file", {"path": str(shared / "secret-plan.txt")})
                assert denied.value.code == FORBIDDEN, denied.value.message
                assert "policy" in denied.value.message.lower() and "42" not in denied.value.message

                r = await client.call_tool("files__read_text_file", {"path": str(shared / "staff.txt")})
                assert not r.is_error, r
                assert text_of(r) == "on call: [REDACTED:employee_id] (Ada)\n"
                assert "EMP-204816" not in json.dumps(r.structured_content or {}), r.structured_content

                r = await client.call_tool("files__write_file", {"path": str(shared / "from-agent.txt"),
                                                                 "content": "written through toolgate"})
                assert not r.is_error, r

    anyio.run(scenario)
    # read_write: the sandboxed server wrote the host's directory.
    assert (shared / "from-agent.txt").read_text() == "written through toolgate"

    calls = gate.audit_lines(5, where=lambda l: l["method"] == "tools/call")
    assert {l["upstream"] for l in calls} == {"files"}
    [deny] = [l for l in calls if l["decision"] == "deny"]
    assert (deny["tool"], deny["reason"], deny["status"]) == ("files__read_text_file", "forbidden_by_policy", 403)
    assert deny["policies"] == ["no-secret-files"]
    allowed = [l for l in calls if l["decision"] == "allow"]
    assert [l["outcome"] for l in allowed] == ["success"] * 4, allowed
    masked = [l for l in allowed if l.get("redactions")]
    assert len(masked) == 1 and {r["rule"] for r in masked[0]["redactions"]} == {"staff-ids"}, masked
    raw = "".join(seg.read_text() for seg in audit_segments(gate.audit_dir))
    assert "EMP-204816" not in raw


# --------------------------------------------------------------------------
# b. the reference "everything" server
# --------------------------------------------------------------------------


def test_everything_server_lists_and_calls(stdio_gate):
    require_npm_servers()
    tools = ["everything__echo", "everything__get-sum"]
    agent = Agent("everything-bot", tools)
    upstream = stdio_upstream_toml("everything", [NODE, EVERYTHING_JS, "stdio"], timeout_ms=20000,
                                   sandbox={"read_only": [NPM_DIR]})
    gate = stdio_gate(upstream, [agent])

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                listed = {t.name: t for t in (await client.list_tools()).tools}
                assert sorted(listed) == sorted(tools)
                assert listed["everything__echo"].input_schema["required"] == ["message"]
                assert await call_text(client, "everything__echo", {"message": "hello from the sandbox"}) == \
                    "Echo: hello from the sandbox"
                assert "is 5" in await call_text(client, "everything__get-sum", {"a": 2, "b": 3})

    anyio.run(scenario)
    calls = gate.audit_lines(2, where=lambda l: l["method"] == "tools/call")
    assert [(l["tool"], l["upstream"], l["decision"], l["outcome"]) for l in calls] == [
        ("everything__echo", "everything", "allow", "success"),
        ("everything__get-sum", "everything", "allow", "success"),
    ]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_everything_server_progress_reaches_the_agent_and_an_abandoned_call_is_cancelled(stdio_gate, mode):
    require_npm_servers()
    tool = "everything__trigger-long-running-operation"
    agent = Agent("everything-bot", [tool])
    upstream = stdio_upstream_toml("everything", [NODE, EVERYTHING_JS, "stdio"], timeout_ms=30000,
                                   sandbox={"read_only": [NPM_DIR]})
    gate = stdio_gate(upstream, [agent])
    seen: list[tuple] = []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, mode) as client:
                done = await call_text(client, tool, {"duration": 0.6, "steps": 3}, progress_callback=on_progress)
                assert "Steps: 3" in done, done
                # The server's progress, relayed from its stdout under the agent's token.
                assert seen == [(1, 3), (2, 3), (3, 3)], seen
                with anyio.move_on_after(1.0) as scope:
                    await client.call_tool(tool, {"duration": 25, "steps": 5})
                assert scope.cancelled_caught

    started = time.monotonic()
    anyio.run(scenario)
    calls = gate.audit_lines(2, where=lambda l: l.get("tool") == tool, timeout=10)
    assert [l["reason"] for l in calls] == ["attached", "cancelled"], calls
    assert time.monotonic() - started < 20, "the abandoned call did not wait for its 25 s"


EVERYTHING_POLICY = """
permit(principal, action, resource);

@id("no-architecture")
forbid(principal, action == Toolgate::Action::"resources/read", resource)
when { context.uri like "*/architecture.md" };

@id("not-thirteen")
forbid(principal, action == Toolgate::Action::"resources/read", resource)
when { context.args has resourceId && context.args.resourceId == "13" };
"""

EVERYTHING_RULES = """
[policies]
files = ["everything.cedar"]

[[output_rules]]
name = "no-product-name"
tools = ["toolgate://everything/*", "everything__*"]
patterns = [{ name = "product", regex = "Everything" }]
"""


def test_everything_server_prompts_resources_and_completions(stdio_gate):
    require_npm_servers()
    static = "toolgate://everything/demo://resource/static/document/"
    agent = Agent("everything-bot", ["everything__echo"],
                  prompts=["everything__args-prompt", "everything__completable-prompt"],
                  resources=[static + "*", "toolgate://everything/demo://resource/dynamic/text/*"])
    upstream = stdio_upstream_toml("everything", [NODE, EVERYTHING_JS, "stdio"], timeout_ms=20000,
                                   sandbox={"read_only": [NPM_DIR]})
    gate = stdio_gate(upstream, [agent], extra_toml=EVERYTHING_RULES,
                      files={"everything.cedar": EVERYTHING_POLICY})

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                prompts = sorted(p.name for p in (await client.list_prompts()).prompts)
                assert prompts == ["everything__args-prompt", "everything__completable-prompt"]
                got = await client.get_prompt("everything__args-prompt", {"city": "Oslo"})
                assert got.messages[0].content.text == "What's weather in Oslo?"

                uris = [str(r.uri) for r in (await client.list_resources()).resources]
                assert static + "features.md" in uris and static + "architecture.md" in uris, uris
                assert all(u.startswith(static) or "/dynamic/text/" in u for u in uris), uris
                templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
                assert templates == ["toolgate://everything/demo://resource/dynamic/text/{resourceId}"]

                features = await client.read_resource(static + "features.md")
                text = features.contents[0].text
                assert text.startswith("# [REDACTED:product] Server - Features"), text[:80]
                assert "Everything" not in text
                assert str(features.contents[0].uri) == static + "features.md"
                dynamic = await client.read_resource("toolgate://everything/demo://resource/dynamic/text/3")
                assert "3" in dynamic.contents[0].text
                # The template's variable is policy's `context.args`.
                with pytest.raises(MCPError) as thirteen:
                    await client.read_resource("toolgate://everything/demo://resource/dynamic/text/13")
                assert thirteen.value.code == -32003
                with pytest.raises(MCPError) as denied:
                    await client.read_resource(static + "architecture.md")
                assert denied.value.code == -32003
                with pytest.raises(MCPError) as blob:
                    await client.read_resource("toolgate://everything/demo://resource/dynamic/blob/1")
                assert blob.value.code == -32002

                done = await client.complete({"type": "ref/prompt", "name": "everything__completable-prompt"},
                                             {"name": "department", "value": "S"})
                assert sorted(done.completion.values) == ["Sales", "Support"]
                with pytest.raises(MCPError) as unseen:
                    await client.complete({"type": "ref/prompt", "name": "everything__simple-prompt"},
                                          {"name": "x", "value": ""})
                assert unseen.value.code == -32602

    anyio.run(scenario)
    lines = gate.audit_lines(8, where=lambda l: l["method"] in ("prompts/get", "resources/read",
                                                                "completion/complete"))
    summary = [(l["method"], l["target"], l["decision"], l["reason"]) for l in lines]
    assert sorted(summary) == sorted([
        ("prompts/get", "everything__args-prompt", "allow", "allowed_by_policy"),
        ("resources/read", static + "features.md", "allow", "allowed_by_policy"),
        ("resources/read", "toolgate://everything/demo://resource/dynamic/text/3", "allow", "allowed_by_policy"),
        ("resources/read", "toolgate://everything/demo://resource/dynamic/text/13", "deny",
         "forbidden_by_policy"),
        ("resources/read", static + "architecture.md", "deny", "forbidden_by_policy"),
        ("resources/read", "toolgate://everything/demo://resource/dynamic/blob/1", "deny",
         "resource_not_attached"),
        ("completion/complete", "everything__completable-prompt", "allow", "attached"),
        ("completion/complete", "everything__simple-prompt", "deny", "prompt_not_attached"),
    ])
    features = next(l for l in lines if l["target"] == static + "features.md")
    assert {"rule": "no-product-name", "pattern": "product"} == {
        k: v for k, v in features["redactions"][0].items() if k != "count"}


def test_a_list_change_from_a_stdio_server_refreshes_its_catalog(stdio_gate):
    """The probe adds a tool and announces it: toolgate fetches the lists
    again long before ``catalog_refresh_s`` (an hour here), and the new
    tool, attached beforehand, is listed and called."""
    tag = new_tag("grow")
    agent = Agent("probe-bot", ["probe__grow", "probe__echo", "probe__late"])
    gate = stdio_gate(probe_upstream_toml("probe", tag, catalog_refresh_s=3600), [agent])

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "probe__late" not in names and "probe__grow" in names
                assert await call_text(client, "probe__grow", {"name": "late"}) == "added late"
                deadline = time.monotonic() + 10
                while "probe__late" not in {t.name for t in (await client.list_tools()).tools}:
                    assert time.monotonic() < deadline, "the list change was not picked up"
                    await anyio.sleep(0.1)
                assert await call_text(client, "probe__late") == "grown"

    anyio.run(scenario)
    assert "says its lists changed" in gate.stderr_text()


# --------------------------------------------------------------------------
# c. the sandbox, seen from the inside
# --------------------------------------------------------------------------


def test_probe_sees_only_what_its_sandbox_allows(stdio_gate, tmp_path):
    ro = tmp_path / "ro-data"
    rw = tmp_path / "rw-data"
    for d in (ro, rw):
        d.mkdir()
        d.chmod(0o755)
    (ro / "readme.txt").write_text("read-only data")
    (rw / "scratch.txt").write_text("scratch data")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the probe")
    token, file_token = "tok-" + secrets.token_hex(6), "file-" + secrets.token_hex(6)

    env = {"PROBE_TOKEN": {"env": "TOOLGATE_TEST_PROBE_TOKEN"}, "PROBE_MODE": "ro",
           "PROBE_FILE_TOKEN": {"file": "probe-token.txt"}}
    sandbox = probe_sandbox(read_only=[ro], read_write=[rw], memory_mb=1024, cpu_s=120, processes=48,
                            open_files=512)
    # The same probe with the host's network: the positive control of `connect`.
    upstreams = (probe_upstream_toml("probe", new_tag("probe"), env=env, sandbox=sandbox)
                 + probe_upstream_toml("netprobe", new_tag("netprobe"), sandbox=probe_sandbox(network=True)))
    agent = probe_agent("probe", "netprobe")
    gate = stdio_gate(upstreams, [agent], env={"TOOLGATE_TEST_LEAK": LEAK, "TOOLGATE_TEST_PROBE_TOKEN": token},
                      files={"probe-token.txt": file_token})
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                listed = {t.name for t in (await client.list_tools()).tools}
                assert listed == set(agent.tools)

                # network: not even toolgate's own loopback listeners
                for port in (gate.port, gate.metrics_port):
                    out = await call_text(client, "probe__connect", {"host": HOST, "port": port})
                    assert out.startswith("refused"), out
                assert await call_text(client, "netprobe__connect", {"host": HOST, "port": gate.port}) == "connected"

                # files: the declared paths, nothing else of the host
                read = lambda path: call_text(client, "probe__read_file", {"path": str(path)})
                for hidden in (gate.config_path, gate.workdir / "probe-token.txt", outside, "/etc/shadow"):
                    out = await read(hidden)
                    assert out.startswith("error:"), (hidden, out)
                assert await read(ro / "readme.txt") == "read-only data"
                assert await read(rw / "scratch.txt") == "scratch data"
                assert "stdio-probe started" in await read(PROBE)

                # environment: only what the upstream declares (and PATH, HOME)
                getenv = lambda name: call_text(client, "probe__getenv", {"name": name})
                assert await getenv("TOOLGATE_TEST_LEAK") == "<unset>"
                assert await getenv("TOOLGATE_TEST_PROBE_TOKEN") == "<unset>"
                assert await getenv("PROBE_TOKEN") == token
                assert await getenv("PROBE_MODE") == "ro"
                assert await getenv("PROBE_FILE_TOKEN") == file_token
                assert await getenv("HOME") == "/tmp"
                assert await getenv("PATH") != "<unset>"

                return json.loads(await call_text(client, "probe__limits"))

    limits = anyio.run(scenario)
    assert limits == {"RLIMIT_AS": 1024 * MIB, "RLIMIT_NPROC": 48, "RLIMIT_NOFILE": 512, "RLIMIT_CPU": 120,
                      "NoNewPrivs": 1, "uid": NOBODY}, limits
    assert token not in gate.config_path.read_text()


def test_check_prints_what_each_sandbox_allows(stdio_gate, tmp_path):
    shared = tmp_path / "shared"
    data = tmp_path / "data"
    for d in (shared, data):
        d.mkdir()
    files_sandbox = {"read_only": [str(NPM_DIR)], "read_write": [str(shared)]}
    probe_box = probe_sandbox(read_only=[data])
    upstreams = (stdio_upstream_toml("files", [NODE, FILESYSTEM_JS, shared], sandbox=files_sandbox)
                 + probe_upstream_toml("probe", new_tag("probe"), env={"PROBE_TOKEN": {"env": "TOOLGATE_TEST_PROBE_TOKEN"}},
                                       sandbox=probe_box)
                 + probe_upstream_toml("netprobe", new_tag("netprobe"), sandbox=probe_sandbox(network=True)))
    gate = stdio_gate(upstreams, [Agent("files-bot", ["files__read_text_file"])], start=False)
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(gate.config_path)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL,
                       env={**os.environ, "TOOLGATE_TEST_PROBE_TOKEN": "x"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for name in ("files", "probe", "netprobe"):
        assert name in out, (name, out)
    # the two upstreams without network say so; the one with it does not
    assert out.count("network: none") == 2, out
    for path in files_sandbox["read_only"] + files_sandbox["read_write"] + probe_box["read_only"]:
        assert path in out, (path, out)


class _Origin:
    """An HTTP (or, with ``tls``, HTTPS) server on 127.0.0.1 in a thread that
    answers every GET with ``body`` and counts the requests it got."""

    def __init__(self, body: str, tls: ssl.SSLContext | None = None) -> None:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                origin.paths.append(self.path)
                data = body.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origins(tmp_path: Path):
    """Three origins for the egress tests -- plain HTTP, HTTPS for
    ``localhost`` (CA in ``tmp_path/certs/ca.pem``) and one no sandbox may
    reach -- stopped at teardown."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca()
    cert, key = issue(ca, "localhost", dns=["localhost"]).write(certs, "localhost")
    ca.write(certs, "ca")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    made = [_Origin("plain origin"), _Origin("tls origin", tls), _Origin("forbidden origin")]
    yield made
    for o in made:
        o.close()


def test_allow_hosts_reach_named_hosts_only_through_the_egress_proxy(stdio_gate, origins, tmp_path):
    plain, tls, forbidden = origins
    cafile = tmp_path / "certs" / "ca.pem"
    sandbox = probe_sandbox(read_only=[cafile.parent], allow_hosts=[f"localhost:{plain.port}", f"localhost:{tls.port}"])
    agent = probe_agent("probe")
    gate = stdio_gate(probe_upstream_toml("probe", new_tag("probe"), sandbox=sandbox), [agent])
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                fetch = lambda url, **kw: call_text(client, "probe__fetch", {"url": url, **kw})
                proxy = await call_text(client, "probe__getenv", {"name": "HTTPS_PROXY"})
                assert proxy.startswith("http://127.0.0.1:"), proxy
                assert await call_text(client, "probe__getenv", {"name": "http_proxy"}) == proxy

                # named hosts: plain HTTP (absolute-form) and HTTPS (CONNECT, TLS end to end)
                assert await fetch(f"http://localhost:{plain.port}/hello?x=1") == "200: plain origin"
                assert await fetch(f"https://localhost:{tls.port}/", cafile=str(cafile)) == "200: tls origin"

                # another port, the same origin by address, anything unnamed: 403 from the proxy
                for url in (f"http://localhost:{forbidden.port}/", f"http://{HOST}:{plain.port}/",
                            f"https://localhost:{forbidden.port}/"):
                    out = await fetch(url, cafile=str(cafile))
                    assert "403" in out, (url, out)
                out = await fetch(f"http://localhost:{forbidden.port}/")
                assert "not in sandbox.allow_hosts" in out, out

                # the proxy is the only way out: a direct connection has no route
                out = await call_text(client, "probe__connect", {"host": HOST, "port": plain.port})
                assert out.startswith("refused"), out
                out = await call_text(client, "probe__connect", {"host": HOST, "port": gate.port})
                assert out.startswith("refused"), out

    anyio.run(scenario)
    assert plain.paths == ["/hello?x=1"], plain.paths
    assert tls.paths == ["/"], tls.paths
    assert forbidden.paths == [], forbidden.paths
    samples = scrape(gate.metrics_port)
    key = 'toolgate_stdio_egress_total{{upstream="probe",outcome="{}"}}'
    assert samples[key.format("allowed")] == 2, samples
    assert samples[key.format("refused")] == 4, samples
    assert log_lines_with(gate, "stdio egress refused", f"{forbidden.port}"), gate.stderr_text()[-2000:]

    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(gate.config_path)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"egress proxy (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY), to: localhost:{plain.port}, localhost:{tls.port}" in out, out


def test_allow_hosts_with_the_hosts_network_is_refused(stdio_gate):
    sandbox = probe_sandbox(network=True, allow_hosts=["api.example.com"])
    gate = stdio_gate(probe_upstream_toml("probe", new_tag("probe"), sandbox=sandbox), [probe_agent("probe")],
                      start=False)
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(gate.config_path)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "`sandbox.allow_hosts` limits a confined network" in out, out


# --------------------------------------------------------------------------
# d. faults: out of memory, kill -9, a hung process
# --------------------------------------------------------------------------


def test_out_of_memory_fails_the_call_and_the_process_is_restarted(stdio_gate):
    agent = probe_agent("probe")
    gate = stdio_gate(probe_upstream_toml("probe", new_tag("probe"), sandbox=probe_sandbox(memory_mb=512)), [agent])
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1
    # the first start is no restart
    assert stdio_metric(gate, "toolgate_stdio_restarts_total", "probe") in (None, 0)

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                limits = json.loads(await call_text(client, "probe__limits"))
                assert limits["RLIMIT_AS"] == 512 * MIB, limits
                assert await call_text(client, "probe__echo", {"text": "before"}) == "before"
                elapsed = await expect_unavailable(client, "probe__allocate", {"mb": 4096})
                assert elapsed < UNAVAILABLE_S + 5, elapsed
                assert await until_serving(client, "probe__echo", {"text": "after"}) == "after"

    anyio.run(scenario)
    assert wait_for_metric(gate, "toolgate_stdio_restarts_total", "probe", lambda v: v >= 1) >= 1
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1
    assert_unavailable_lines(gate, "probe__allocate", "probe")
    assert gate.alive()


def test_call_in_flight_fails_fast_when_the_process_is_killed(stdio_gate):
    tag = new_tag("probe")
    agent = probe_agent("probe")
    gate = stdio_gate(probe_upstream_toml("probe", tag), [agent])
    outcome: dict[str, Any] = {}

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                assert await call_text(client, "probe__echo", {"text": "up"}) == "up"
                pid = probe_interpreter_pid(tag)

                async def sleeper():
                    try:
                        outcome["returned"] = await client.call_tool("probe__sleep", {"seconds": 10})
                    except MCPError as e:
                        outcome["error"] = e
                    outcome["done"] = time.monotonic()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sleeper)
                    await anyio.sleep(1.0)
                    assert "done" not in outcome, outcome
                    outcome["killed"] = time.monotonic()
                    os.kill(pid, signal.SIGKILL)

                assert await until_serving(client, "probe__echo", {"text": "again"}) == "again"
                assert probe_interpreter_pid(tag) != pid

    anyio.run(scenario)
    assert "error" in outcome, f"the call in flight was answered: {outcome}"
    err = outcome["error"]
    assert err.code == INTERNAL_ERROR and "unavailable" in err.message.lower(), (err.code, err.message)
    assert outcome["done"] - outcome["killed"] < UNAVAILABLE_S, outcome["done"] - outcome["killed"]
    assert wait_for_metric(gate, "toolgate_stdio_restarts_total", "probe", lambda v: v >= 1) >= 1
    assert_unavailable_lines(gate, "probe__sleep", "probe")


def test_hung_process_is_restarted_by_the_liveness_ping(stdio_gate):
    tag = new_tag("probe")
    agent = probe_agent("probe")
    gate = stdio_gate(probe_upstream_toml("probe", tag, ping_interval_s=1), [agent])
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1
    pid = probe_interpreter_pid(tag)
    os.kill(pid, signal.SIGSTOP)
    try:
        # a ping every second, 5 s to answer: restarted well within 15 s
        assert wait_for_metric(gate, "toolgate_stdio_restarts_total", "probe", lambda v: v >= 1, timeout=15) >= 1
        deadline = time.monotonic() + 5
        while proc_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not proc_alive(pid), "the hung process was left behind"

        async def scenario():
            with anyio.fail_after(SCENARIO_TIMEOUT_S):
                async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                    assert await until_serving(client, "probe__echo", {"text": "alive"}) == "alive"

        anyio.run(scenario)
        assert probe_interpreter_pid(tag) != pid
    finally:
        if proc_alive(pid):  # ours: started by this test's toolgate
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# e. a command that keeps exiting
# --------------------------------------------------------------------------


def test_crash_loop_makes_readyz_unhealthy_and_other_upstreams_keep_serving(stdio_gate, upstreams):
    crashing = stdio_upstream_toml("crashy", [PYTHON, "-c", "import sys; sys.exit(3)"],
                                   sandbox={"read_only": python_read_only()})
    agent = Agent("probe-bot", ["probe__echo", "crashy__echo", "crm__lookup_customer"])
    gate = stdio_gate(crashing + probe_upstream_toml("probe", new_tag("probe"))
                      + http_upstream_toml("crm", upstreams["crm"].url), [agent], start=False)
    gate.spawn()
    gate.wait_healthy(15)

    # backoff 0.5 + 1 + 2 + 4 s: five exits within ~8 s
    deadline = time.monotonic() + 25
    while True:
        r = gate.readyz()
        if (r.status_code == 503 and "crashy" in r.text) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json() == {"status": "unhealthy", "upstreams": ["crashy"]}, r.text
    assert stdio_metric(gate, "toolgate_stdio_up", "crashy") == 0
    assert stdio_metric(gate, "toolgate_stdio_restarts_total", "crashy") >= 4
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                assert await call_text(client, "probe__echo", {"text": "still here"}) == "still here"
                customer = result_json(await client.call_tool("crm__lookup_customer", {"customer_id": "C-9"}))
                assert customer["id"] == "C-9"
                assert await expect_unavailable(client, "crashy__echo", {"text": "x"}) < UNAVAILABLE_S

    anyio.run(scenario)
    assert gate.readyz().status_code == 503
    assert gate.alive()
    assert_unavailable_lines(gate, "crashy__echo", "crashy")


# --------------------------------------------------------------------------
# f. stderr in the log; no child outlives toolgate
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stderr_is_logged_and_no_child_outlives_toolgate(stdio_gate, sig):
    tag = new_tag("noisy")
    agent = probe_agent("noisy")
    gate = stdio_gate(probe_upstream_toml("noisy", tag), [agent])

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(gate.url, agent.key, "auto") as client:
                assert await call_text(client, "noisy__echo", {"text": "hi"}) == "hi"

    anyio.run(scenario)
    assert log_lines_with(gate, "stdio-probe started", "noisy"), gate.stderr_text()

    interpreter = probe_interpreter_pid(tag)
    before = tagged_processes(tag)
    assert "bwrap" in before.values(), f"the probe does not run under bwrap: {before}"

    gate.proc.send_signal(sig)
    try:
        gate.proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"toolgate still running {EXIT_TIMEOUT_S}s after {sig.name}")
    deadline = time.monotonic() + 5
    while (tagged_processes(tag) or any(proc_alive(p) for p in before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: proc_comm(p) for p in before if proc_alive(p)} | tagged_processes(tag)
    assert not left, f"left running after {sig.name}: {left}"
    assert not proc_alive(interpreter)


# --------------------------------------------------------------------------
# g. without bwrap
# --------------------------------------------------------------------------


def test_without_bwrap_run_refuses_unless_the_sandbox_is_off(stdio_gate, tmp_path):
    no_bwrap = tmp_path / "bin-without-bwrap"
    no_bwrap.mkdir()
    env = {"PATH": str(no_bwrap), "TOOLGATE_TEST_LEAK": LEAK}
    agent = probe_agent("bare")

    confined_tag = new_tag("bare")
    confined = stdio_gate(probe_upstream_toml("bare", confined_tag), [agent], env=env, start=False)
    confined.spawn()
    try:
        code = confined.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"toolgate started without bwrap on its PATH:\n{confined.stderr_text()}")
    err = confined.stderr_text()
    assert code != 0, err
    assert "bwrap" in err and "sandbox.enabled = false" in err, err
    assert not tagged_processes(confined_tag)

    bare = stdio_gate(probe_upstream_toml("bare", new_tag("bare"), sandbox={"enabled": False}), [agent], env=env)

    async def scenario():
        with anyio.fail_after(SCENARIO_TIMEOUT_S):
            async with sdk_client_cm(bare.url, agent.key, "auto") as client:
                assert await call_text(client, "bare__echo", {"text": "unconfined"}) == "unconfined"
                # unconfined: it sees the host's files...
                config = await call_text(client, "bare__read_file", {"path": str(bare.config_path)})
                assert 'kind = "stdio"' in config, config
                # ...but still only its declared environment
                assert await call_text(client, "bare__getenv", {"name": "TOOLGATE_TEST_LEAK"}) == "<unset>"

    anyio.run(scenario)
    # said loudly: a warning (or worse) naming the upstream and its sandbox
    # (not merely the relayed stderr of the process, which names it too)
    loud = [l for l in log_lines_with(bare, "bare", "sandbox") if ("WARN" in l or "ERROR" in l)
            and "stdio-probe started" not in l]
    assert loud, bare.stderr_text()


def test_per_user_processes_are_separate_capped_and_reaped(stdio_gate):
    """`instances = "per_user"`: each end user's calls go to a process of
    their own (the probe draws a random id per process), the same user keeps
    theirs, the cap stops the least recently used idle one, and an idle
    process is reaped."""
    tag = new_tag("peruser")
    upstream = probe_upstream_toml("probe", tag, instances="per_user", max_instances=3, idle_timeout_s=4)
    agent = Agent("probe-bot", [f"probe__{t}" for t in PROBE_TOOLS], act_for_users=True)
    gate = stdio_gate(upstream, [agent])
    assert wait_for_metric(gate, "toolgate_stdio_up", "probe", lambda v: v == 1) == 1

    def instance_for(user: str | None) -> str:
        headers = modern_headers("tools/call", "probe__instance", agent.key)
        if user is not None:
            headers["Toolgate-On-Behalf-Of"] = user
        body = modern_request("tools/call", {"name": "probe__instance", "arguments": {}})
        r = httpx.post(gate.url, json=body, headers=headers, timeout=30.0)
        assert r.status_code == 200, r.text
        return r.json()["result"]["content"][0]["text"]

    shared = instance_for(None)
    alice, bob = instance_for("alice"), instance_for("bob")
    assert len({shared, alice, bob}) == 3, "one process per end user, beside the shared one"
    assert instance_for("alice") == alice and instance_for("bob") == bob
    assert instance_for(None) == shared
    assert stdio_metric(gate, "toolgate_stdio_processes", "probe") == 3

    # At the cap (3: the shared one and two users'), a third user's first
    # call stops the least recently used idle process: alice's.
    instance_for("bob")
    carol = instance_for("carol")
    assert carol not in (shared, alice, bob)
    assert stdio_metric(gate, "toolgate_stdio_processes", "probe") == 3
    assert instance_for("bob") == bob, "the recently used process is kept"
    assert instance_for("alice") not in (alice, carol), "alice's was stopped: she gets a new one"

    # Idle past idle_timeout_s: every user's process is reaped, the shared one stays.
    assert wait_for_metric(gate, "toolgate_stdio_processes", "probe", lambda v: v == 1, timeout=15) == 1
    assert instance_for(None) == shared
    assert len(tagged_processes(tag)) >= 1
