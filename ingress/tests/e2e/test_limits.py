"""Per-customer rates and quotas (``[limits]``): a day quota per customer
with a larger plan for one customer, counted only for calls that were
allowed, enforced through both doors. The official SDK client gets the
JSON-RPC error with the limit's data; a plain HTTP client gets 429 with
``Retry-After`` and the IETF ``RateLimit`` headers; passing calls carry
where they stand; records name the limit.
"""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import HTTP_TIMEOUT_S, Agent, modern_headers, modern_request, sdk_client_cm
from test_admin_api import admin_gate  # noqa: F401  (fixture)

TOOL = "crm__lookup_customer"


def limits_toml(crm_url: str) -> str:
    return f"""
[[upstreams]]
name = "crm"
url = "{crm_url}"

[[upstreams.routes]]
method = "GET"
path = "/customers/{{customer_id}}"
tool = "lookup_customer"

[limits]
max_counters = 1024

[[limits.rules]]
id = "day"
customer = "*"
quota = {{ units = 3, per = "day" }}

[[limits.rules]]
id = "acme-plan"
customer = "acme"
quota = {{ units = 5, per = "day" }}
"""


def mcp_call(gate, key: str, tool: str = TOOL) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": {"customer_id": "C-1"}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", tool, key), timeout=HTTP_TIMEOUT_S)


def test_a_day_quota_per_customer_with_a_plan_through_both_doors(make_gate, upstreams):
    acme = Agent("acme-bot", [TOOL], customer="acme")
    plain = Agent("plain-bot", [TOOL])
    gate = make_gate(upstream_list=[], agents=[acme, plain], extra_toml=limits_toml(upstreams["crm"].url))

    # A refused call costs nothing: an unattached tool, twice.
    for _ in range(2):
        assert mcp_call(gate, plain.key, "crm__delete_record").status_code == 400

    first = mcp_call(gate, plain.key)
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == '"day";q=3;w=86400'
    assert first.headers["ratelimit"].startswith('"day";r=2;t=')

    async def through_sdk():
        async with sdk_client_cm(gate.url, plain.key, "auto") as client:
            await client.call_tool(TOOL, {"customer_id": "C-2"})
            await client.call_tool(TOOL, {"customer_id": "C-3"})
            with pytest.raises(MCPError) as over:
                await client.call_tool(TOOL, {"customer_id": "C-4"})
            return over.value

    # The second and third calls of the day pass (through the SDK), the fourth does not.
    err = anyio.run(through_sdk)
    assert "quota exceeded" in str(err)
    assert err.error.data["limit"] == "day" and err.error.data["remaining"] == 0

    # Through the REST door the same quota answers 429 with its headers.
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        r = http.get(f"{gate.base}/rest/crm/customers/C-4", headers={"Authorization": f"Bearer {plain.key}"})
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "quota_exceeded" and r.json()["limit"] == "day"
        retry = int(r.headers["retry-after"])
        assert 0 < retry <= 86_400
        assert r.headers["ratelimit"] == f'"day";r=0;t={retry}'

        # acme has its plan: five calls, through either door.
        statuses = [mcp_call(gate, acme.key).status_code for _ in range(3)]
        statuses += [http.get(f"{gate.base}/rest/crm/customers/C-{i}",
                              headers={"Authorization": f"Bearer {acme.key}"}).status_code for i in range(3)]
        assert statuses == [200, 200, 200, 200, 200, 429]

    calls = [r for r in gate.read_audit() if r.get("method") == "tools/call"]
    limited = [r for r in calls if r["reason"] == "quota_exceeded"]
    assert [(r["customer"], r["limit"], r["status"], r.get("door", "mcp")) for r in limited] == [
        ("plain-bot", "day", 429, "mcp"),
        ("plain-bot", "day", 429, "rest"),
        ("acme", "acme-plan", 429, "rest"),
    ]
    assert all(r["decision"] == "deny" for r in limited)
    assert sum(1 for r in calls if r["decision"] == "allow" and r["customer"] == "plain-bot") == 3
    assert sum(1 for r in calls if r["decision"] == "allow" and r["customer"] == "acme") == 5

    # `toolgate usage` reads the same counts back from the audit log.
    import csv
    import io
    import subprocess

    from harness import TOOLGATE_BIN
    out = subprocess.run([str(TOOLGATE_BIN), "usage", str(gate.audit_dir), "--since", "1h", "--format", "csv"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {(r["customer"], r["tool"]): r for r in csv.DictReader(io.StringIO(out.stdout))}
    pick = lambda r: tuple(int(r[k]) for k in ("calls", "allowed", "denied", "limited"))  # noqa: E731
    assert pick(rows[("plain-bot", TOOL)]) == (5, 3, 2, 2)
    assert pick(rows[("plain-bot", "crm__delete_record")]) == (2, 0, 2, 0)
    assert pick(rows[("acme", TOOL)]) == (6, 5, 1, 1)


def test_limits_written_through_the_admin_api(admin_gate):  # noqa: F811
    acme = Agent("acme-bot", [TOOL], customer="acme")
    extra = """
[limits]

[[limits.rules]]
id = "day"
customer = "*"
quota = { units = 100, per = "day" }
"""
    gate, admin, _agents = admin_gate(agents=[acme], extra_toml=extra)
    # The file's rule reads as a document.
    day = admin.get("limits/day").json()
    assert day["source"] == "config" and day["spec"] == {"customer": "*", "quota": {"units": 100, "per": "day"}}

    # A plan for acme, written at run time, replaces the default for acme.
    r = admin.put("limits/acme-plan", {"customer": "acme", "quota": {"units": 2, "per": "day"}})
    assert r.status_code == 200, r.text
    assert [mcp_call(gate, acme.key).status_code for _ in range(3)] == [200, 200, 429]

    # Rules that could not be enforced are refused, naming the problem.
    for spec, says in [
        ({"customer": "acme", "quota": {"units": 2, "per": "week"}}, "quota.per"),
        ({"tool": "nope__x", "rate": {"calls_per_s": 1}}, "no tool any upstream"),
        ({"customer": "acme"}, "exactly one of `rate` and `quota`"),
        ({"customer": "acme", "quota": {"units": 0, "per": "day"}}, "must be above 0"),
        ({"customer": "acme", "quota": {"units": 2, "per": "day", "time_zone": "Mars/Base"}}, "is no time zone"),
    ]:
        r = admin.put("limits/bad", spec)
        assert r.status_code in (400, 422) and says in r.text, (spec, r.status_code, r.text)

    # A quota on a time zone's calendar reads back as written.
    tz = {"customer": "globex", "quota": {"units": 9, "per": "month", "time_zone": "America/New_York"}}
    assert admin.put("limits/globex-plan", tz).status_code == 200
    assert admin.get("limits/globex-plan").json()["spec"] == tz

    # Deleting the plan brings acme back under the default.
    version = admin.version("limits/acme-plan")
    assert admin.delete("limits/acme-plan", version).status_code == 200
    assert mcp_call(gate, acme.key).status_code == 200


def test_live_usage_agrees_with_the_usage_report_from_the_audit_log(admin_gate):  # noqa: F811
    import csv
    import io
    import subprocess

    from harness import TOOLGATE_BIN

    acme = Agent("acme-bot", [TOOL], customer="acme")
    plain = Agent("plain-bot", [TOOL])
    extra = """
[limits]

[[limits.rules]]
id = "day"
customer = "*"
quota = { units = 3, per = "day" }
"""
    gate, admin, _agents = admin_gate(agents=[acme, plain], extra_toml=extra)
    statuses = [mcp_call(gate, acme.key).status_code for _ in range(4)]
    statuses += [mcp_call(gate, plain.key).status_code, mcp_call(gate, plain.key, "crm__delete_record").status_code]
    assert statuses == [200, 200, 200, 429, 200, 400]

    live = admin.get("usage").json()
    assert live["since_us"] > 0
    out = subprocess.run([str(TOOLGATE_BIN), "usage", str(gate.audit_dir), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert live["items"] == json.loads(out.stdout)
    acme_row = [r for r in live["items"] if r["customer"] == "acme"]
    assert acme_row == [{"customer": "acme", "tool": TOOL, "calls": 4, "allowed": 3, "denied": 1,
                         "limited": 1, "tool_errors": 0, "units": 3}]
    # One customer, as CSV.
    r = admin.get("usage?customer=plain-bot&format=csv")
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["tool"], x["calls"], x["denied"]) for x in rows] == [("crm__delete_record", "1", "1"), (TOOL, "1", "0")]
    assert admin.get("usage?bogus=1").status_code == 400


def test_quota_usage_reports_units_used_and_remaining(admin_gate):  # noqa: F811
    """``GET /v1/usage/quotas``: each quota counter in its window, with
    tool costs counted, refused calls taking nothing, JSON and CSV; the
    units each call was charged in its record, summed by both usage
    reports."""
    import csv
    import io
    import subprocess

    from harness import TOOLGATE_BIN, read_audit_dir

    acme = Agent("acme-bot", [TOOL, "crm__delete_record"], customer="acme")
    globex = Agent("globex-bot", [TOOL], customer="globex")
    extra = """
[limits]

[[limits.rules]]
id = "day"
customer = "*"
quota = { units = 20, per = "day" }
cost = { "crm__delete_record" = 10 }

[[limits.rules]]
id = "hour-per-tool"
customer = "*"
tool = "*"
quota = { units = 100, per = "hour" }
"""
    gate, admin, _agents = admin_gate(agents=[acme, globex], extra_toml=extra)
    assert [mcp_call(gate, acme.key).status_code for _ in range(3)] == [200] * 3
    body = modern_request("tools/call", {"name": "crm__delete_record", "arguments": {"record_id": "R-1"}})
    r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "crm__delete_record", acme.key),
                   timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text  # 10 units
    # 13 used of 20: a second delete (10 more) is refused and takes nothing.
    r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", "crm__delete_record", acme.key),
                   timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 429, r.text
    assert mcp_call(gate, globex.key).status_code == 200

    items = admin.get("usage/quotas?customer=acme").json()["items"]
    by = {(i["limit"], i["key"].get("tool")): i for i in items}
    assert set(by) == {("day", None), ("hour-per-tool", TOOL), ("hour-per-tool", "crm__delete_record")}, items
    day = by[("day", None)]
    assert (day["key"], day["per"], day["units"], day["used"], day["remaining"], day["shared"]) == (
        {"customer": "acme"}, "day", 20, 13, 7, False), day
    assert 0 < day["reset_s"] <= 86_400 and day["window_start_s"] % 3600 == 0, day
    assert (by[("hour-per-tool", TOOL)]["used"], by[("hour-per-tool", "crm__delete_record")]["used"]) == (3, 1)

    everyone = admin.get("usage/quotas").json()["items"]
    assert {(i["limit"], i["key"]["customer"], i["used"]) for i in everyone if i["limit"] == "day"} == {
        ("day", "acme", 13), ("day", "globex", 1)}
    rows = list(csv.DictReader(io.StringIO(admin.get("usage/quotas?customer=acme&format=csv").text)))
    assert [(x["limit"], x["customer"], x["tool"], x["used"], x["remaining"]) for x in rows] == [
        ("day", "acme", "", "13", "7"),
        ("hour-per-tool", "acme", "crm__delete_record", "1", "99"),
        ("hour-per-tool", "acme", TOOL, "3", "97"),
    ], rows
    assert admin.get("usage/quotas?bogus=1").status_code == 400

    # Each allowed call's record carries the units it was charged (the
    # larger of what its two quotas weigh it), and both usage reports sum
    # them per customer and tool: the units the day quota counted.
    out = subprocess.run([str(TOOLGATE_BIN), "usage", str(gate.audit_dir), "--customer", "acme", "--format", "csv"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = {x["tool"]: (x["calls"], x["allowed"], x["limited"], x["units"])
              for x in csv.DictReader(io.StringIO(out.stdout))}
    assert report == {TOOL: ("3", "3", "0", "3"), "crm__delete_record": ("2", "1", "1", "10")}, out.stdout
    live = {x["tool"]: (str(x["calls"]), str(x["allowed"]), str(x["limited"]), str(x["units"]))
            for x in admin.get("usage?customer=acme").json()["items"]}
    assert live == report
    assert sum(int(u) for *_, u in report.values()) == day["used"]
    deletes = [r for r in read_audit_dir(gate.audit_dir) if r.get("tool") == "crm__delete_record"]
    assert [(r["decision"], r.get("units")) for r in deletes] == [("allow", 10), ("deny", None)], deletes


def _seconds_to_next_window(zone: str, per: str) -> float:
    """Seconds from now to the start of the next local day or hour in ``zone``."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    now = dt.datetime.now(ZoneInfo(zone))
    if per == "day":
        nxt = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        nxt = (now + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    # Wall-clock arithmetic, then back to an instant (exact across DST in these zones today).
    return (nxt.astimezone(dt.timezone.utc) - now.astimezone(dt.timezone.utc)).total_seconds()


def test_quota_windows_follow_the_configured_time_zone(make_gate, upstreams):
    crm = upstreams["crm"].url
    agents = {c: Agent(f"{c}-bot", [TOOL], customer=c) for c in ("tokyo-co", "utc-co", "ist-co")}
    extra = limits_toml(crm).split("[limits]")[0] + """
[limits]
max_counters = 1024
time_zone = "Asia/Tokyo"

[[limits.rules]]
id = "tokyo-day"
customer = "tokyo-co"
quota = { units = 1, per = "day" }

[[limits.rules]]
id = "utc-day"
customer = "utc-co"
quota = { units = 1, per = "day", time_zone = "UTC" }

[[limits.rules]]
id = "ist-hour"
customer = "ist-co"
quota = { units = 1, per = "hour", time_zone = "Asia/Kolkata" }
"""
    gate = make_gate(upstream_list=[], agents=list(agents.values()), extra_toml=extra)
    expected = {"tokyo-co": ("Asia/Tokyo", "day"), "utc-co": ("UTC", "day"), "ist-co": ("Asia/Kolkata", "hour")}
    for customer, agent in agents.items():
        assert mcp_call(gate, agent.key).status_code == 200
        over = mcp_call(gate, agent.key)
        zone, per = expected[customer]
        want = _seconds_to_next_window(zone, per)
        assert over.status_code in (200, 429), over.text
        data = over.json()["error"]["data"]
        assert data["remaining"] == 0, data
        # The reset is the zone's next local midnight (or hour), not UTC's.
        assert abs(data["reset_s"] - want) <= 5, (customer, data, want)

    # A name the tz database does not have is refused before start.
    import subprocess

    from harness import TOOLGATE_BIN
    bad = gate.config_path.read_text().replace('time_zone = "Asia/Kolkata"', 'time_zone = "Mars/Olympus_Mons"')
    path = gate.config_path.with_name("bad.toml")
    path.write_text(bad)
    out = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "`quota.time_zone`: `Mars/Olympus_Mons` is no time zone" in out.stdout + out.stderr
