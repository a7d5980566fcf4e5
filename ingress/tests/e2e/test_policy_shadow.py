"""Shadow policies: a policy marked ``@shadow`` is evaluated on every call
beside the enforced set and never enforced; ``@shadow("retire")`` keeps an
enforced policy out of the shadow set. Every record carries the shadow
verdict next to the real one and the policies behind it; the metrics count
agreements and disagreements; enforcement is what the enforced set says.
"""

from __future__ import annotations

import httpx

from harness import HOST, HTTP_TIMEOUT_S, Agent, free_port, modern_headers, modern_request

TOOL = "tickets__create_ticket"

POLICIES = """
@id("baseline")
permit(principal, action, resource);

// Enforced today; the candidate drops it.
@id("no-p0")
@shadow("retire")
forbid(principal, action == Toolgate::Action::"tickets__create_ticket", resource)
when { context.args.priority == 0 };

// The candidate's new rule: no priority above 3.
@id("at-most-p3")
@shadow
forbid(principal, action == Toolgate::Action::"tickets__create_ticket", resource)
when { context.args.priority > 3 };
"""


def test_shadow_policies_are_recorded_and_counted_never_enforced(make_gate, tmp_path):
    policy = tmp_path / "shadow.cedar"
    policy.write_text(POLICIES)
    agent = Agent("ops-bot", [TOOL])
    port = free_port()
    gate = make_gate(agents=[agent], extra_toml=f'\n[policies]\nfiles = ["{policy}"]\n\n[metrics]\nlisten = "{HOST}:{port}"\n')

    def create(priority: int) -> int:
        body = modern_request("tools/call", {"name": TOOL, "arguments": {"title": "t", "priority": priority}})
        r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, agent.key), timeout=HTTP_TIMEOUT_S)
        return r.status_code

    # Enforced: only `no-p0`. The shadow set: `at-most-p3`, without `no-p0`.
    assert [create(p) for p in (1, 0, 5)] == [200, 403, 200]
    records = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    got = [(r["verdict"], r["shadow"]["verdict"], r["shadow"]["agrees"], r["shadow"]["policies"]) for r in records]
    assert got == [
        ("allow", "allow", True, ["baseline"]),
        ("deny", "allow", False, ["baseline"]),
        ("allow", "deny", False, ["at-most-p3"]),
    ], got
    assert records[1]["policies"] == ["no-p0"]

    metrics = httpx.get(f"http://{HOST}:{port}/metrics", timeout=HTTP_TIMEOUT_S).text
    total = lambda name: sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith(name + "{"))  # noqa: E731
    assert total("toolgate_shadow_agreements_total") == 1
    assert total("toolgate_shadow_disagreements_total") == 2


def test_promote_makes_the_shadow_set_enforced_with_no_failed_call(make_gate, tmp_path):
    import subprocess
    import threading
    import time

    from harness import TOOLGATE_BIN

    policy = tmp_path / "shadow.cedar"
    policy.write_text(POLICIES)
    agent = Agent("ops-bot", [TOOL])
    gate = make_gate(agents=[agent], extra_toml=f'\n[policies]\nfiles = ["{policy}"]\n')
    statuses: list[int] = []
    stop = threading.Event()

    def traffic():
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
            while not stop.is_set():
                body = modern_request("tools/call", {"name": TOOL, "arguments": {"title": "t", "priority": 1}})
                statuses.append(http.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, agent.key)).status_code)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        dry = subprocess.run([str(TOOLGATE_BIN), "policy", "promote", "-c", str(gate.config_path), "--dry-run"],
                             capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0 and "1 shadow policies enforced, 1 retired" in dry.stdout, dry.stdout + dry.stderr
        assert policy.read_text() == POLICIES
        out = subprocess.run([str(TOOLGATE_BIN), "policy", "promote", "-c", str(gate.config_path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "@shadow" not in policy.read_text() and "no-p0" not in policy.read_text()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            body = modern_request("tools/call", {"name": TOOL, "arguments": {"title": "t", "priority": 5}})
            r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, agent.key), timeout=HTTP_TIMEOUT_S)
            if r.status_code == 403:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the promoted policy is not enforced")
    finally:
        stop.set()
        t.join()
    assert statuses and set(statuses) == {200}, set(statuses)
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"title": "t", "priority": 0}})
    assert httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, agent.key),
                      timeout=HTTP_TIMEOUT_S).status_code == 200, "the retired policy is gone"
    last = [r for r in gate.read_audit() if r.get("method") == "tools/call"][-1]
    assert "shadow" not in last and last["verdict"] == "allow"
