"""The toolgate command line: ``check``, ``key new``, ``--help`` and ``run`` on bad input."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import default_agents, upstream_cfgs
from harness import (
    HTTP_TIMEOUT_S,
    TOOLGATE_BIN,
    Agent,
    Gate,
    modern_headers,
    modern_request,
    parse_body,
)

CLI_TIMEOUT_S = 30


def toolgate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert TOOLGATE_BIN.exists(), f"toolgate binary not found at {TOOLGATE_BIN}"
    return subprocess.run(
        [str(TOOLGATE_BIN), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def good_config_lines() -> list[str]:
    support, billing = default_agents()
    return [
        "[server]",
        'listen = "127.0.0.1:18080"',
        "shards = 2",
        "max_header_bytes = 16384",
        "max_body_bytes = 1048576",
        "header_timeout_ms = 10000",
        "idle_timeout_ms = 60000",
        "",
        "[[upstreams]]",
        'name = "crm"',
        'url = "http://127.0.0.1:9101/mcp"',
        'prefix = "crm"',
        "timeout_ms = 10000",
        "",
        "[[upstreams]]",
        'name = "tickets"',
        'url = "http://127.0.0.1:9102/mcp"',
        "",
        "[[agents]]",
        'id = "support-bot"',
        f'api_key_sha256 = "{support.key_sha256}"',
        'tools = ["crm__lookup_customer", "tickets__create_ticket"]',
        "",
        "[[agents]]",
        'id = "billing-bot"',
        f'api_key_sha256 = "{billing.key_sha256}"',
        'tools = ["crm__delete_record", "tickets__close_ticket"]',
        "",
        "[audit]",
        'dir = "audit"',
        "",
    ]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "toolgate.toml"
    path.write_text("\n".join(lines))
    return path


def with_line(lines: list[str], after: str, new: str) -> tuple[list[str], int]:
    """Insert ``new`` after the first line equal to ``after``; returns lines and its 1-based number."""
    i = lines.index(after) + 1
    return lines[:i] + [new] + lines[i:], i + 1


def replace_line(lines: list[str], old: str, new: str) -> tuple[list[str], int]:
    i = lines.index(old)
    return lines[:i] + [new] + lines[i + 1 :], i + 1


def test_help_exits_zero():
    r = toolgate("--help")
    assert r.returncode == 0, r
    out = (r.stdout + r.stderr).lower()
    for sub in ("run", "check", "key"):
        assert sub in out, out


def test_check_accepts_good_config(tmp_path):
    path = write(tmp_path, good_config_lines())
    r = toolgate("check", "-c", str(path))
    assert r.returncode == 0, f"stdout={r.stdout!r} stderr={r.stderr!r}"


def test_check_accepts_config_written_by_harness(tmp_path, upstreams):
    gate = Gate(tmp_path / "g", upstream_cfgs(upstreams, tickets={"prefix": "", "timeout_ms": 500}),
                default_agents(), server={"max_body_bytes": 65536, "header_timeout_ms": 1000})
    r = toolgate("check", "-c", str(gate.config_path))
    assert r.returncode == 0, f"{gate.render_config()}\nstderr={r.stderr!r}"


def _bad_configs() -> dict[str, tuple[list[str], int]]:
    base = good_config_lines()
    return {
        "unknown_server_key": with_line(base, "shards = 2", "listen_backlog = 128"),
        "unknown_agent_key": with_line(base, 'id = "billing-bot"', 'role = "admin"'),
        "unknown_upstream_key": with_line(base, 'name = "tickets"', "retries = 3"),
        "unknown_audit_key": with_line(base, 'dir = "audit"', "rotate = true"),
        "shards_not_integer": replace_line(base, "shards = 2", 'shards = "two"'),
        "timeout_not_integer": replace_line(base, "timeout_ms = 10000", 'timeout_ms = "slow"'),
        "tools_not_array": replace_line(
            base, 'tools = ["crm__delete_record", "tickets__close_ticket"]', 'tools = "crm__delete_record"'
        ),
        "max_body_negative": replace_line(base, "max_body_bytes = 1048576", "max_body_bytes = -1"),
    }


BAD_CONFIGS = _bad_configs()


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_rejects_bad_config_naming_the_line(tmp_path, case):
    lines, lineno = BAD_CONFIGS[case]
    path = write(tmp_path, lines)
    r = toolgate("check", "-c", str(path))
    assert r.returncode != 0, f"{case}: accepted; stdout={r.stdout!r} stderr={r.stderr!r}"
    assert re.search(rf"\bline\s+{lineno}\b", r.stderr, re.IGNORECASE), (
        f"{case}: stderr does not name line {lineno} ({lines[lineno - 1]!r}):\n{r.stderr}"
    )


def test_check_reports_every_error(tmp_path):
    lines = good_config_lines()
    lines, first = with_line(lines, "shards = 2", "listen_backlog = 128")
    lines, second = with_line(lines, 'id = "billing-bot"', 'role = "admin"')
    path = write(tmp_path, lines)
    r = toolgate("check", "-c", str(path))
    assert r.returncode != 0
    # at minimum the first error; ideally each (a TOML syntax/type error may stop at the first)
    assert re.search(rf"\bline\s+{first}\b", r.stderr, re.IGNORECASE), r.stderr


def test_check_missing_file_fails(tmp_path):
    r = toolgate("check", "-c", str(tmp_path / "does-not-exist.toml"))
    assert r.returncode != 0
    assert r.stderr.strip(), "no error message"


def test_run_refuses_invalid_config(tmp_path):
    lines, lineno = BAD_CONFIGS["unknown_server_key"]
    path = write(tmp_path, lines)
    r = toolgate("run", "-c", str(path))
    assert r.returncode != 0, r
    assert re.search(rf"\bline\s+{lineno}\b", r.stderr, re.IGNORECASE), r.stderr


def test_run_refuses_a_port_another_gateway_listens_on(make_gate, tmp_path):
    """Shards share their port through SO_REUSEPORT; a second gateway started
    on the same address must not join that group and take a share of the
    first one's connections."""
    first = make_gate(upstream_list=[], agents=[Agent("a", [])])
    second = Gate(tmp_path / "second", [], [Agent("a", [])])
    second.port = first.port
    second.config_path.write_text(second.render_config())
    second.spawn()
    try:
        assert second.proc.wait(timeout=CLI_TIMEOUT_S) != 0
    finally:
        second.stop()
    err = second.stderr_text()
    assert f"127.0.0.1:{first.port}" in err and "another process already listens there" in err, err
    # The first gateway still answers every connection.
    for _ in range(20):
        assert httpx.get(f"{first.base}/readyz", timeout=HTTP_TIMEOUT_S).status_code == 200


def parse_key_new(stdout: str) -> tuple[str, str]:
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert len(lines) == 2, stdout
    m1 = re.fullmatch(r"key: (\S+)", lines[0])
    m2 = re.fullmatch(r"sha256: ([0-9a-f]{64})", lines[1])
    assert m1 and m2, stdout
    return m1.group(1), m2.group(1)


def test_key_new_prints_key_and_its_sha256():
    r = toolgate("key", "new")
    assert r.returncode == 0, r
    key, digest = parse_key_new(r.stdout)
    assert hashlib.sha256(key.encode()).hexdigest() == digest
    assert len(key) >= 32, f"key looks too short to be random: {key!r}"

    r2 = toolgate("key", "new")
    key2, digest2 = parse_key_new(r2.stdout)
    assert key2 != key and digest2 != digest


def test_generated_key_authenticates(make_gate, upstreams):
    out = toolgate("key", "new")
    key, digest = parse_key_new(out.stdout)
    agent = Agent("cli-bot", ["crm__lookup_customer"], key=key, key_sha256=digest)
    gate = make_gate(agents=[agent])
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        r = http.post(gate.url, json=modern_request("tools/list"), headers=modern_headers("tools/list", key=key))
        assert r.status_code == 200, r.text
        assert [t["name"] for t in parse_body(r)["result"]["tools"]] == ["crm__lookup_customer"]
        r = http.post(gate.url, json=modern_request("tools/list"), headers=modern_headers("tools/list", key=digest))
        assert r.status_code == 401, r.text
