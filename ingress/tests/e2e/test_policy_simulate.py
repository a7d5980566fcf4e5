"""``toolgate policy simulate``: recorded traffic (official SDK agents,
several agents and users, argument conditions, judge escalations) is
re-decided with a candidate policy set through the gateway's own decision
code. The live policies reproduce every recorded verdict except the one
whose condition reads a value the audit log masks (an e-mail address), and
say so; a candidate that tightens the refund limit reports exactly the
affected call; a broken candidate or a tampered log is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import anyio
import pytest

from harness import TOOLGATE_BIN, result_json
from test_policies_e2e import EXAMPLE_POLICIES, client, denied, gate, judge, ops_upstream  # noqa: F401  (fixtures)


def simulate(gate, candidate, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TOOLGATE_BIN), "policy", "simulate", "-c", str(gate.config_path), "--candidate", str(candidate),
         "--audit", str(gate.audit_dir), *extra],
        capture_output=True, text=True, timeout=120)


def record_traffic(gate) -> None:
    a = gate.agents

    async def scenario():
        async with client(gate.url, a["support-bot"].key) as c:
            assert result_json(await c.call_tool("crm__lookup_customer", {"customer_id": "C-1"}))["id"] == "C-1"
            await c.call_tool("ops__send_email", {"to": "ada@example.com", "subject": "hi"})
            await denied(c, "ops__send_email", {"to": "eve@evil.test", "subject": "hi"})
        async with client(gate.url, a["support-bot"].key, user="alice") as c:
            await c.call_tool("crm__delete_record", {"record_id": "R-2"})
        async with client(gate.url, a["support-bot"].key, user="bob") as c:
            await denied(c, "crm__delete_record", {"record_id": "R-3"})
        async with client(gate.url, a["intern-bot"].key, user="alice") as c:
            await denied(c, "crm__delete_record", {"record_id": "R-4"})
        async with client(gate.url, a["billing-bot"].key) as c:
            for order, amount in [("o-1", 50), ("o-2", 200), ("ok-3", 700)]:
                await c.call_tool("ops__refund", {"order_id": order, "amount": amount})
            with pytest.raises(Exception):
                await c.call_tool("ops__refund", {"order_id": "bad-4", "amount": 800})
            # Refused before policy: not a call policy decided.
            with pytest.raises(Exception):
                await c.call_tool("crm__lookup_customer", {"customer_id": "C-9"})

    anyio.run(scenario)


def test_simulation_reproduces_the_live_policies_and_reports_a_tightened_limit(gate, tmp_path):
    record_traffic(gate)
    recorded = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    assert [r.get("verdict") for r in recorded] == [
        "allow", "allow", "deny", "allow", "deny", "deny", "allow", "allow", "judge", "judge", None]
    gate.stop()

    # The live policies as the candidate: nothing changes (exit 0), and the
    # fidelity check names the one call it cannot reproduce, masked in the log.
    same = tmp_path / "same"
    shutil.copytree(EXAMPLE_POLICIES, same)
    out = simulate(gate, same, "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["simulated"] == 10 and report["changed"] == 0, report
    assert report["not_reproduced"] == [{"transition": "allow→deny", "calls": 1}], report
    (masked,) = report["not_reproduced_examples"]
    assert masked["tool"] == "ops__send_email" and masked["recorded_policies"] == ["mail-send"]
    assert report["not_decided_by_policy"] >= 1 and report["not_simulable"] == {}

    # A candidate that lowers the refund limit to 100: exactly the 200 refund changes.
    tighter = tmp_path / "tighter"
    shutil.copytree(EXAMPLE_POLICIES, tighter)
    refunds = tighter / "refunds.cedar"
    refunds.write_text(refunds.read_text().replace("context.args.amount < 500", "context.args.amount < 100"))
    out = simulate(gate, tighter, "--format", "json")
    assert out.returncode == 2, out.stderr
    report = json.loads(out.stdout)
    assert report["changed"] == 1
    (t,) = report["transitions"]
    assert (t["from"], t["to"], t["calls"]) == ("allow", "deny", 1)
    assert t["by"] == [{"agent": "billing-bot", "tool": "ops__refund", "customer": "billing-bot", "calls": 1}]
    (example,) = t["examples"]
    assert example["policies"] == ["refund-small"] and example["candidate_policies"] == []
    assert "o-2" not in out.stdout, "examples name records, never argument values"
    md = simulate(gate, tighter, "--format", "markdown")
    assert md.returncode == 2 and "| allow → deny | `billing-bot` | `ops__refund` | `billing-bot` | 1 |" in md.stdout

    # A candidate that does not parse is refused with its file and line.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.cedar").write_text('permit(principal, action, resource);\nforbid(principal action, resource);\n')
    out = simulate(gate, broken)
    assert out.returncode == 1 and "bad.cedar" in out.stderr and "line 2" in out.stderr, out.stderr

    # A log whose hash chain does not verify is refused unless asked.
    segment = sorted(p for p in gate.audit_dir.rglob("*") if p.is_file() and "refund" in p.read_text(errors="ignore"))[0]
    segment.write_text(segment.read_text().replace('"amount\\":50', '"amount\\":51', 1))
    out = simulate(gate, same)
    assert out.returncode == 1 and "does not verify" in out.stderr, out.stderr
    assert simulate(gate, same, "--allow-unverified").returncode == 0


def test_the_policy_repository_ci_job_fails_on_a_loosening(gate, tmp_path):
    record_traffic(gate)
    gate.stop()
    script = EXAMPLE_POLICIES.parents[0] / "ci" / "check-policy-change.sh"
    looser = tmp_path / "looser"
    shutil.copytree(EXAMPLE_POLICIES, looser)
    (looser / "mail.cedar").write_text(
        '@id("mail-send")\npermit(principal, action == Toolgate::Action::"ops__send_email", resource);\n')
    env = {"PATH": f"{TOOLGATE_BIN.parent}:/usr/bin:/bin", "CONFIG": str(gate.config_path),
           "CANDIDATE": str(looser), "TRAFFIC": str(gate.audit_dir), "CASES": str(tmp_path / "none")}

    def job(**extra) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=180,
                              env=env | extra, cwd=tmp_path)

    out = job()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 recorded calls that were denied would be allowed" in out.stderr
    assert "| deny → allow | `support-bot` | `ops__send_email` |" in out.stdout
    assert job(ALLOW_LOOSENING="1").returncode == 0
    # A tightening passes the job (and is shown).
    tighter = tmp_path / "tighter"
    shutil.copytree(EXAMPLE_POLICIES, tighter)
    (tighter / "refunds.cedar").write_text(
        (EXAMPLE_POLICIES / "refunds.cedar").read_text().replace("amount < 500", "amount < 100"))
    out = job(CANDIDATE=str(tighter))
    assert out.returncode == 0 and "**1 would change**" in out.stdout, out.stdout + out.stderr
