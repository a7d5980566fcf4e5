"""The audit log's disk fills up under traffic: toolgate fails closed, loses
nothing it answered, and serves again by itself once space returns.

The audit directory lives on a small tmpfs the test mounts (a real
filesystem with a real ENOSPC), reached through a symlink from the gate's
working directory; a filler file on the same tmpfs takes the space away and
gives it back. Needs root (mount), as the CI machine has.

Checked: every call answered with a result has its record; the refusals
are 503 "audit pipeline unavailable" with ``Retry-After``; after the filler
is removed, calls pass again within a bound without a restart; the metric
``toolgate_audit_log_ok`` went to 0 and back to 1; ``toolgate audit verify``
accepts the whole log.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest

from harness import HOST, TOOLGATE_BIN, Agent, free_port, modern_headers, modern_request, scrape

TOOL = "crm__lookup_customer"
# Calls made while the disk is full before the first refusal must come.
MAX_CALLS_TO_REFUSAL = 400
RECOVERY_S = 20.0


def _call(http: httpx.Client, gate, agent: Agent, n: int) -> httpx.Response:
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": f"C-{n}"}})
    return http.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, agent.key))


def _fill(path: str) -> None:
    """Writes zeros to ``path`` until the filesystem has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted at ``tmp_path/disk``; unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_audit_disk_full_fails_closed_and_recovers(make_gate, small_disk):
    agent = Agent("support-bot", [TOOL])
    metrics_port = free_port()
    gate = make_gate(agents=[agent], start=False, audit={"segment_bytes": 262144},
                     extra_toml=f'[metrics]\nlisten = "{HOST}:{metrics_port}"\n')
    (small_disk / "audit").mkdir()
    gate.audit_dir.symlink_to(small_disk / "audit")
    gate.start()
    answered: set[str] = set()
    refused: list[httpx.Response] = []
    with httpx.Client(timeout=10.0) as http:
        n = 0
        for _ in range(20):
            n += 1
            r = _call(http, gate, agent, n)
            assert r.status_code == 200 and "result" in r.json(), r.text
            answered.add(f"C-{n}")
        assert scrape(metrics_port)["toolgate_audit_log_ok"] == 1

        # The disk fills: calls go on until the log cannot take a record,
        # then every call is refused rather than answered unaudited.
        _fill(str(small_disk / "filler"))
        for _ in range(MAX_CALLS_TO_REFUSAL):
            n += 1
            r = _call(http, gate, agent, n)
            if r.status_code == 200 and "result" in r.json():
                answered.add(f"C-{n}")
                continue
            refused.append(r)
            if len(refused) >= 5:
                break
        assert len(refused) >= 5, f"no refusal within {MAX_CALLS_TO_REFUSAL} calls on a full disk"
        for r in refused:
            assert r.status_code == 503, r.text
            assert "audit pipeline unavailable" in r.text, r.text
            assert "retry-after" in r.headers, r.headers
        assert scrape(metrics_port)["toolgate_audit_log_ok"] == 0

        # Space comes back: service resumes by itself, no restart.
        os.unlink(small_disk / "filler")
        deadline = time.monotonic() + RECOVERY_S
        while True:
            n += 1
            r = _call(http, gate, agent, n)
            if r.status_code == 200 and "result" in r.json():
                answered.add(f"C-{n}")
                break
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, f"still refusing {RECOVERY_S}s after space returned: {r.text}"
            time.sleep(0.1)
        for _ in range(10):
            n += 1
            r = _call(http, gate, agent, n)
            assert r.status_code == 200, r.text
            answered.add(f"C-{n}")
        assert scrape(metrics_port)["toolgate_audit_log_ok"] == 1
        assert gate.alive()

    gate.stop()
    records = [rec for rec in gate.read_audit() if rec.get("method") == "tools/call"]
    recorded = {json.loads(rec["args_redacted"])["customer_id"] for rec in records if rec["status"] == 200}
    missing = answered - recorded
    assert not missing, f"answered calls without a record: {sorted(missing)[:10]}"
    # The refused calls are recorded too once there was room again, or not
    # at all: never as answered.
    assert not any(rec["status"] == 200 and json.loads(rec["args_redacted"])["customer_id"] not in answered
                   for rec in records)
    out = subprocess.run([str(TOOLGATE_BIN), "audit", "verify", str(gate.audit_dir)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
