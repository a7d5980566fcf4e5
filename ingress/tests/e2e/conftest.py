"""Fixtures for the toolgate end-to-end suite.

Layout of a typical test:

    agent MCP client (SDK / httpx / raw socket)
        -> toolgate (the binary under test, one process per Gate)
            -> crm upstream      (SDK MCPServer, JSON responses)
            -> tickets upstream  (SDK MCPServer, SSE responses)

The two SDK upstreams live for the whole session; each test builds its own
gate (or shares a module-level one) with a fresh config, port and audit dir.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import HOST, Agent, Gate, UpstreamCfg, UpstreamProc, free_port, stop_process, wait_for_port

# Gates currently running; their stderr is attached to the report of a failing test.
ACTIVE_GATES: list[Gate] = []

SUPPORT_TOOLS = ["crm__lookup_customer", "tickets__create_ticket"]
BILLING_TOOLS = ["crm__delete_record", "tickets__close_ticket"]


def default_agents() -> list[Agent]:
    """``support-bot`` and ``billing-bot``, each with a freshly generated API key."""
    return [Agent("support-bot", list(SUPPORT_TOOLS)), Agent("billing-bot", list(BILLING_TOOLS))]


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, UpstreamProc]]:
    logs = tmp_path_factory.mktemp("upstream-logs")
    procs = {
        "crm": UpstreamProc("crm", "json"),
        "tickets": UpstreamProc("tickets", "sse"),
    }
    try:
        for p in procs.values():
            p.start(logs)
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def upstream_cfgs(upstreams: dict[str, UpstreamProc], **overrides: dict[str, Any]) -> list[UpstreamCfg]:
    """Config entries for the two SDK upstreams; ``overrides[name]`` sets prefix/timeout_ms."""
    return [UpstreamCfg(name=n, url=u.url, **overrides.get(n, {})) for n, u in upstreams.items()]


def start_gate(workdir: Path, upstream_list, agents, server: dict[str, Any] | None = None, start: bool = True,
               extra_toml: str = "", tls_client: dict[str, Any] | None = None) -> Gate:
    gate = Gate(workdir, upstream_list, agents, server, extra_toml=extra_toml, tls_client=tls_client)
    ACTIVE_GATES.append(gate)
    if start:
        gate.start()
    return gate


def release_gate(gate: Gate) -> None:
    gate.stop()
    if gate in ACTIVE_GATES:
        ACTIVE_GATES.remove(gate)


@pytest.fixture
def make_gate(tmp_path: Path, upstreams: dict[str, UpstreamProc]):
    """Factory: ``make_gate(upstreams=None, agents=None, server=None, start=True, audit=None, sinks=(), extra_toml="") -> Gate``.

    Defaults to both SDK upstreams and the two default agents. Every gate is
    stopped at teardown.
    """
    gates: list[Gate] = []

    def factory(upstream_list=None, agents=None, server=None, start=True, audit=None, sinks=(), extra_toml="") -> Gate:
        workdir = tmp_path / f"gate{len(gates)}"
        gate = Gate(workdir, upstream_list if upstream_list is not None else upstream_cfgs(upstreams),
                    agents if agents is not None else default_agents(), server, audit=audit, sinks=sinks,
                    extra_toml=extra_toml)
        gates.append(gate)
        ACTIVE_GATES.append(gate)
        if start:
            gate.start()
        return gate

    yield factory
    for g in gates:
        release_gate(g)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for i, gate in enumerate(ACTIVE_GATES):
            text = gate.stderr_text()
            if len(text) > 20000:
                text = "...\n" + text[-20000:]
            state = "running" if gate.alive() else f"exited {gate.proc.returncode if gate.proc else None}"
            report.sections.append((f"toolgate stderr (gate {i}, port {gate.port}, {state})", text))


@pytest.fixture
def billing_api(tmp_path) -> Iterator[str]:
    """The FastAPI billing service (``billing_api.py``) on a free port; its base URL."""
    port = free_port()
    log = open(tmp_path / "billing.log", "wb")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("billing_api.py")), str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    try:
        wait_for_port(port, 30.0, proc)
        yield f"http://{HOST}:{port}"
    finally:
        stop_process(proc)
