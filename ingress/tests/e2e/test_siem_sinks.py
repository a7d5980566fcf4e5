"""HTTP SIEM sinks end to end: Splunk HEC, Elasticsearch ``_bulk`` and an
NDJSON webhook, against a local receiver (siem_receiver.py) that fails for a
while, answers 429 with Retry-After, drops connections mid-request and
reports bulk item errors. Every record must arrive; duplicates only where
docs/audit-and-siem.md ("Delivery guarantees") says they can happen.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from harness import TOOLGATE_BIN, free_port, rss_kib
from siem_receiver import Receiver
from syslog_collector import make_pki
from test_audit_trail import traffic

TOKEN = "hec-token-5f0c1d2e-do-not-log"


def query_all(audit_dir: Path) -> list[dict]:
    """Every record, as `toolgate audit query --json` reads the log."""
    res = subprocess.run([str(TOOLGATE_BIN), "audit", "query", str(audit_dir), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


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


def test_splunk_hec_survives_503s_429_and_dropped_connections(make_gate, receivers, tmp_path):
    hec = receivers(script=[("status", 503, {})] * 3
                    + [("status", 429, {"Retry-After": "1"}), "close"]).start()
    token_file = tmp_path / "hec.token"
    token_file.write_text(TOKEN + "\n")
    gate = make_gate(sinks=[{
        "name": "splunk", "kind": "splunk_hec", "url": hec.url + "/services/collector/event",
        "token": {"file": str(token_file)}, "gzip": True, "batch_records": 5,
        "retry_initial_ms": 50, "retry_max_ms": 200, "io_timeout_ms": 2000,
    }])
    traffic(gate, 30)
    gate.audit_lines(30, where=lambda l: l["method"] == "tools/call")
    records = query_all(gate.audit_dir)
    want = {r["log_seq"] for r in records}
    got = hec.wait_for(want, lambda e: e["event"]["metadata"]["sequence"], timeout=20)
    assert want <= set(got), f"missing at the collector: {sorted(want - set(got))[:10]}"
    # Every failure happened before the receiver stored anything: no duplicates.
    assert sorted(got) == sorted(want), "each record exactly once"

    by_seq = {r["log_seq"]: r for r in records}
    for e in hec.stored:
        r = by_seq[e["event"]["metadata"]["sequence"]]
        assert (e["source"], e["sourcetype"]) == ("toolgate", "toolgate:audit")
        assert e["event"]["class_uid"] == 6003 and e["event"]["type_uid"] == 600399
        assert e["event"]["disposition"] == ("Allowed" if r["decision"] == "allow" else "Blocked")
        assert e["event"]["actor"]["app_name"] == r["agent"]
        assert e["event"]["api"]["operation"] == r["tool"]
        assert e["event"]["metadata"]["uid"] == r["hash"]
        assert abs(e["time"] - e["event"]["time"] / 1000) < 0.002

    statuses = [q.status for q in hec.requests]
    assert statuses[:5] == [503, 503, 503, 429, -1], statuses
    for q in hec.requests:
        assert q.headers.get("Authorization") == f"Splunk {TOKEN}"
        if q.status != -1:
            assert q.headers.get("Content-Encoding") == "gzip"
    after_429 = hec.requests[4].at - hec.requests[3].at
    assert after_429 >= 0.95, f"Retry-After: 1 honoured, next try after {after_429:.2f}s"
    log = gate.stderr_text()
    assert "sink delivery failed" in log
    assert TOKEN not in log, "the token never reaches toolgate's own log"


def test_elasticsearch_bulk_item_errors_and_webhook(make_gate, receivers):
    es_port = free_port()
    es = receivers(port=es_port, script=[("items", [201, 429, 409, 201, 503, 201, 201, 201, 201, 201]), "close"])
    hook = receivers(script=[("status", 503, {"Retry-After": "0"}), ("status", 500, {})]).start()
    metrics_port = free_port()
    gate = make_gate(extra_toml=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n', sinks=[
        {"name": "es", "kind": "elasticsearch", "url": f"http://127.0.0.1:{es_port}", "index": "audit-e2e",
         "batch_records": 10, "retry_initial_ms": 50, "retry_max_ms": 200},
        {"name": "hook", "kind": "webhook", "url": hook.url + "/ingest", "format": "toolgate",
         "headers": {"X-Source": "toolgate-e2e"}, "batch_records": 8, "batch_bytes": 2048,
         "retry_initial_ms": 50, "retry_max_ms": 200},
    ])
    # Records pile up while the cluster is down, so the first bulk request
    # is a full batch of 10.
    traffic(gate, 30)
    gate.audit_lines(30, where=lambda l: l["method"] == "tools/call")
    time.sleep(1.0)
    # The webhook catches up once its two scripted failures are retried;
    # the cluster stays down, so its lag only grows.
    deadline = time.monotonic() + 10
    while True:
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        lag = {l.split(" ")[0]: float(l.split(" ")[1]) for l in metrics.splitlines() if l.startswith("toolgate_sink_lag")}
        if lag.get('toolgate_sink_lag_records{sink="hook"}') == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert lag['toolgate_sink_lag_records{sink="es"}'] >= 30, lag
    assert lag['toolgate_sink_lag_seconds{sink="es"}'] >= 1.0, lag
    assert lag['toolgate_sink_lag_records{sink="hook"}'] == 0 and lag['toolgate_sink_lag_seconds{sink="hook"}'] == 0, lag
    es.start()
    records = query_all(gate.audit_dir)
    want = {r["log_seq"] for r in records}
    got = es.wait_for(want, lambda d: d["metadata"]["sequence"], timeout=20)
    assert want <= set(got), f"missing in the index: {sorted(want - set(got))[:10]}"
    assert sorted(got) == sorted(want), "409 on the chain-hash _id keeps the index free of duplicates"
    assert es.ids == {r["hash"] for r in records}

    def ids(q) -> list[str]:
        lines = [json.loads(line) for line in q.body.decode().splitlines()]
        assert all(l["create"]["_index"] == "audit-e2e" for l in lines[0::2])
        return [l["create"]["_id"] for l in lines[0::2]]

    first = es.requests[0]
    assert first.path == "/_bulk" and first.headers["Content-Type"] == "application/x-ndjson"
    assert ids(first) == [r["hash"] for r in records[:10]]
    # The 429 and 503 items (records 2 and 5), and only they, are sent again:
    # once into a dropped connection, then for good.
    assert es.requests[1].status == -1
    assert ids(es.requests[2]) == [records[1]["hash"], records[4]["hash"]]
    doc = next(d for d in es.stored if d["metadata"]["sequence"] == records[0]["log_seq"])
    assert doc["@timestamp"] == records[0]["time"]

    got = hook.wait_for(want, lambda d: d["log_seq"], timeout=20)
    assert sorted(got) == sorted(want)
    assert sorted(hook.stored, key=lambda d: d["log_seq"]) == records, "format = toolgate: the log records as written"
    assert [q.status for q in hook.requests[:2]] == [503, 500]
    assert all(q.headers.get("X-Source") == "toolgate-e2e" for q in hook.requests)
    assert all(len(q.body) <= 2048 for q in hook.requests), "batch_bytes bounds each request"
    assert len(hook.requests) > 2 + 30 // 8


def test_check_reads_sink_tokens_and_tls_files_without_printing_them(make_gate, tmp_path):
    gate = make_gate(start=False, sinks=[{
        "name": "splunk", "kind": "splunk_hec", "url": "https://127.0.0.1:1/services/collector/event",
        "token": {"env": "TOOLGATE_E2E_HEC_TOKEN"}, "ca_file": str(tmp_path / "missing-ca.pem"),
    }])

    def check(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(gate.config_path)], capture_output=True,
                              text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})

    res = check({})
    assert res.returncode != 0
    assert "sink `splunk`: token: environment variable `TOOLGATE_E2E_HEC_TOKEN` is not set" in res.stderr, res.stderr
    res = check({"TOOLGATE_E2E_HEC_TOKEN": TOKEN})
    assert res.returncode != 0
    assert "sink `splunk`: ca_file `" in res.stderr and "missing-ca.pem" in res.stderr, res.stderr
    assert TOKEN not in res.stderr + res.stdout


def test_hec_over_https_checks_the_collector_certificate(make_gate, receivers, tmp_path):
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other-pki")
    hec = receivers(tls=pki).start()
    token_file = tmp_path / "hec.token"
    token_file.write_text(TOKEN)
    common = {"kind": "splunk_hec", "url": hec.url + "/services/collector/event",
              "token": {"file": str(token_file)}, "server_name": "localhost",
              "retry_initial_ms": 50, "retry_max_ms": 200}
    gate = make_gate(sinks=[{"name": "trusted", "ca_file": str(pki["ca"]), **common},
                            {"name": "untrusted", "ca_file": str(other["ca"]), **common}])
    traffic(gate, 10)
    gate.audit_lines(10, where=lambda l: l["method"] == "tools/call")
    want = {r["log_seq"] for r in query_all(gate.audit_dir)}
    got = hec.wait_for(want, lambda e: e["event"]["metadata"]["sequence"], timeout=15)
    assert sorted(got) == sorted(want), "the trusted sink delivered everything, once; the other nothing"
    assert all(q.headers.get("Authorization") == f"Splunk {TOKEN}" for q in hec.requests)
    log = gate.stderr_text()
    assert "invalid peer certificate" in log and "untrusted" in log, log[-2000:]
    assert TOKEN not in log


DOWN_S = 20.0


def test_a_sink_down_under_load_then_back_gets_everything_in_order(make_gate, receivers, tmp_path):
    """The collector refuses connections for 20 s while four clients keep
    calling. toolgate keeps serving with its memory within a bound (the log
    on disk is the backlog, the sink holds one batch); once the collector
    is back, every record arrives exactly once, in log order. The bound is
    loose because memory also rises by about 500 bytes per call, sink or
    not, until the shards' audit rings have been round once (their pages
    are backed as first used; docs/performance.md)."""
    import threading

    hec = receivers().start()
    token_file = tmp_path / "hec.token"
    token_file.write_text(TOKEN + "\n")
    gate = make_gate(sinks=[{
        "name": "splunk", "kind": "splunk_hec", "url": hec.url + "/services/collector/event",
        "token": {"file": str(token_file)}, "batch_records": 64, "retry_initial_ms": 50, "retry_max_ms": 500,
        "io_timeout_ms": 2000,
    }])
    traffic(gate, 20)
    hec.stop()  # down: connections refused
    stop = threading.Event()
    answered = [0]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=10.0) as http:
            from test_audit_trail import call
            i = 0
            while not stop.is_set():
                i += 1
                r = call(http, gate, "support-bot", "crm__lookup_customer", i)
                assert r.status_code == 200, r.text
                with lock:
                    answered[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    samples: list[tuple[int, int]] = []  # (answered, RSS KiB)
    started = time.monotonic()
    while time.monotonic() - started < DOWN_S:
        time.sleep(1.0)
        with lock:
            samples.append((answered[0], rss_kib(gate.proc.pid)))
    stop.set()
    for t in threads:
        t.join(timeout=15)
    # From the fifth second on (allocator warmed up), memory stays within a
    # bound while the owed records keep growing: the backlog is the log on
    # disk, not a queue in memory.
    (n0, rss0), (n1, rss1) = samples[4], samples[-1]
    assert n1 - n0 >= 500, samples
    print(f"\nsink down {DOWN_S:.0f} s: {n1} calls answered, RSS {samples[0][1]} -> {rss1} KiB, "
          f"{(rss1 - rss0) * 1024 / (n1 - n0):.0f} bytes per owed record from second 5 on")
    assert rss1 - rss0 < 16 * 1024, samples

    hec.start()  # back, same port
    records = query_all(gate.audit_dir)
    want = [r["log_seq"] for r in records]
    got = hec.wait_for(set(want), lambda e: e["event"]["metadata"]["sequence"], timeout=90)
    assert set(want) <= set(got), f"missing: {sorted(set(want) - set(got))[:10]}"
    assert got == sorted(got), "delivered in log order"
    assert len(got) == len(set(got)), "each record once: nothing was stored while the collector was down"
    assert gate.alive()
