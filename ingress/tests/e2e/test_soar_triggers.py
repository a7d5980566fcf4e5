"""SOAR triggers end to end: a ``kind = "soar"`` sink evaluates its rules over
the audit log and POSTs one JSON alert per firing to a receiver written here
(siem_receiver.py, webhook mode). Checks that each rule kind fires as
configured and only then, that cool-downs hold, that a receiver failing for a
while gets every alert exactly once, and that a restart does not re-alert
``first_use`` for pairs already seen.
"""

from __future__ import annotations

import time

import httpx
import pytest

from siem_receiver import Receiver
from test_audit_trail import call, traffic
from test_siem_sinks import query_all

FAST = {"retry_initial_ms": 50, "retry_max_ms": 200, "poll_interval_ms": 50}


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        started.append(r)
        return r

    yield make
    for r in started:
        if hasattr(r, "server"):
            r.stop()


def soar_sink(url: str, rules: list[dict], **extra) -> dict:
    return {"name": "soar", "kind": "soar", "url": url + "/hooks/toolgate", **FAST, **extra, "rules": rules}


def wait_alerts(r: Receiver, n: int, timeout: float = 15.0, settle: float = 1.0) -> list[dict]:
    """Waits for ``n`` stored alerts, then a little longer for any extra."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with r.lock:
            if len(r.stored) >= n:
                break
        time.sleep(0.05)
    time.sleep(settle)
    with r.lock:
        return list(r.stored)


def by_rule(alerts: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for a in alerts:
        out.setdefault(a["rule"], []).append(a)
    return out


def test_each_rule_kind_fires_as_configured_and_only_then(make_gate, receivers):
    hook = receivers().start()
    gate = make_gate(sinks=[soar_sink(hook.url, [
        {"name": "billing-denials", "kind": "deny", "agents": ["billing-*"]},
        {"name": "support-denials", "kind": "deny", "agents": ["support-bot"]},
        {"name": "denial-once-per-hour", "kind": "deny", "cooldown_s": 3600},
        {"name": "deny-burst", "kind": "deny_rate", "threshold": 5, "window_s": 60},
        {"name": "support-busy", "kind": "call_rate", "threshold": 8, "window_s": 60,
         "agents": ["support-bot"], "cooldown_s": 3600},
        {"name": "very-busy", "kind": "call_rate", "threshold": 100, "window_s": 60},
        {"name": "new-tool", "kind": "first_use"},
        {"name": "judged", "kind": "judge"},
    ], headers={"X-Soar": "e2e"})])
    traffic(gate, 20)  # odd ids: support-bot allowed; even: billing-bot denied
    calls = gate.audit_lines(20, where=lambda l: l["method"] == "tools/call")
    records = {r["log_seq"]: r for r in query_all(gate.audit_dir)}
    denied = [l for l in calls if l["decision"] == "deny"]
    allowed = [l for l in calls if l["decision"] == "allow"]
    assert len(denied) == 10 and all(l["agent"] == "billing-bot" for l in denied)
    assert len(allowed) == 10 and all(l["agent"] == "support-bot" for l in allowed)

    # 10 + 1 + 1 + 1 + 2 alerts.
    alerts = wait_alerts(hook, 15)
    rules = by_rule(alerts)
    assert sorted(rules) == sorted(["billing-denials", "deny-burst", "denial-once-per-hour", "new-tool", "support-busy"]), \
        {k: len(v) for k, v in rules.items()}

    # deny: one alert per denial, pointing at its record.
    got = rules["billing-denials"]
    assert sorted(a["log_seq"] for a in got) == sorted(l["log_seq"] for l in denied)
    for a in got:
        r = records[a["log_seq"]]
        assert a["kind"] == "deny" and a["decision"] == "deny"
        assert (a["agent"], a["tool"], a["reason"], a["user"]) == (r["agent"], r["tool"], r["reason"], r.get("user"))
        assert a["hash"] == r["hash"] and a["last_time"] == r["time"] == a["first_time"]
        assert a["count"] == 1 and a["threshold"] is None and a["alert_id"] == f"billing-denials/{a['log_seq']}"

    # cool-down: the same (rule, agent, tool) alerts once per hour.
    [once] = rules["denial-once-per-hour"]
    assert once["log_seq"] == denied[0]["log_seq"]

    # deny_rate: at the fifth denial within 60 s, then quiet (cool-down = window).
    [burst] = rules["deny-burst"]
    assert burst["log_seq"] == denied[4]["log_seq"], (burst, [d["log_seq"] for d in denied])
    assert (burst["kind"], burst["agent"], burst["count"], burst["threshold"], burst["window_s"]) == \
        ("deny_rate", "billing-bot", 5, 5, 60)
    assert burst["first_time"] == denied[0]["time"] and burst["last_time"] == denied[4]["time"]

    # call_rate: support-bot's eighth call; the threshold of 100 never fires.
    [busy] = rules["support-busy"]
    assert busy["log_seq"] == allowed[7]["log_seq"] and busy["count"] == 8
    assert busy["first_time"] == allowed[0]["time"]

    # first_use: one per (agent, tool) pair, at its first call.
    firsts = sorted((a["agent"], a["tool"], a["log_seq"]) for a in rules["new-tool"])
    assert firsts == sorted([("support-bot", "crm__lookup_customer", allowed[0]["log_seq"]),
                             ("billing-bot", "crm__lookup_customer", denied[0]["log_seq"])])

    for q in hook.requests:
        assert q.path == "/hooks/toolgate"
        assert q.headers.get("Content-Type") == "application/json"
        assert q.headers.get("X-Soar") == "e2e"
    assert len(hook.requests) == len(alerts), "one POST per alert"


def test_receiver_failing_then_recovering_gets_every_alert_exactly_once(make_gate, receivers):
    hook = receivers(script=[("status", 503, {"Retry-After": "0"})] * 4 + ["close"]
                     + [("status", 503, {})] * 2).start()
    gate = make_gate(sinks=[soar_sink(hook.url, [
        {"name": "denials", "kind": "deny"},
        {"name": "new-tool", "kind": "first_use"},
    ], batch_records=4)])
    traffic(gate, 24)
    calls = gate.audit_lines(24, where=lambda l: l["method"] == "tools/call")
    denied = [l["log_seq"] for l in calls if l["decision"] == "deny"]
    alerts = wait_alerts(hook, 14, timeout=20)
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)) == 14, sorted(ids)
    assert sorted(a["log_seq"] for a in alerts if a["rule"] == "denials") == sorted(denied)
    statuses = [q.status for q in hook.requests]
    assert statuses[:7] == [503, 503, 503, 503, -1, 503, 503], statuses
    # Alerts leave in log order, also across the outage.
    seqs = [a["log_seq"] for a in alerts]
    assert seqs == sorted(seqs)
    assert "sink delivery failed" in gate.stderr_text()


@pytest.mark.parametrize("how", ["stop", "kill -9", "stop, cursor lost"])
def test_restart_does_not_realert_first_use_of_pairs_already_seen(make_gate, receivers, how):
    hook = receivers().start()
    gate = make_gate(sinks=[soar_sink(hook.url, [
        {"name": "new-tool", "kind": "first_use"},
        {"name": "denials", "kind": "deny"},
    ])])
    traffic(gate, 6)
    gate.audit_lines(6, where=lambda l: l["method"] == "tools/call")
    first = wait_alerts(hook, 2 + 3)
    assert sorted(a["rule"] for a in first) == ["denials"] * 3 + ["new-tool"] * 2
    assert (gate.audit_dir / "soar" / "soar.json").is_file()

    if how.startswith("stop"):
        gate.stop()
        if how == "stop, cursor lost":
            # The saved state alone knows which records were evaluated.
            (gate.audit_dir / "cursors" / "soar").unlink()
    else:
        # The state is saved before the delivery that sent an alert is
        # acknowledged to the runner, so even SIGKILL loses nothing.
        assert gate.proc is not None
        gate.proc.kill()
        gate.proc.wait(timeout=10)
    gate.start()
    traffic(gate, 6, start_id=101)
    with httpx.Client(timeout=10.0) as http:
        r = call(http, gate, "billing-bot", "tickets__close_ticket", 200)
        assert r.status_code == 200
    gate.audit_lines(13, where=lambda l: l["method"] == "tools/call")
    alerts = wait_alerts(hook, 5 + 3 + 1)
    new = alerts[len(first):]
    assert sorted(a["rule"] for a in new) == ["denials"] * 3 + ["new-tool"], new
    [fresh] = [a for a in new if a["rule"] == "new-tool"]
    assert (fresh["agent"], fresh["tool"]) == ("billing-bot", "tickets__close_ticket")
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "nothing sent twice across the restart"


def test_bad_soar_config_is_refused_with_its_line(tmp_path):
    from test_audit_trail import toolgate

    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[[upstreams]]\nname = "crm"\nurl = "http://127.0.0.1:9/mcp"\n\n'
        '[[audit.sinks]]\nname = "soar"\nkind = "soar"\nurl = "http://127.0.0.1:9/h"\n\n'
        '[[audit.sinks.rules]]\nname = "burst"\nkind = "deny_rate"\nthreshold = 5\n'
    )
    res = toolgate("check", "-c", str(cfg))
    assert res.returncode != 0
    assert "rule `burst` needs `threshold` and `window_s`" in res.stderr, res.stderr
