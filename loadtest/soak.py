#!/usr/bin/env python3
"""toolgate soak: mixed traffic at half of saturation for an hour (by
default), reporting per window what must stay flat.

The parts are real and all on 127.0.0.1: the release toolgate, the fast
MCP upstream (`toolgate-loadtest upstream`), a judge (a small HTTP server
here that allows every call it is asked about), and rsyslog as a syslog
TCP sink. The traffic, from `toolgate-loadtest run` in open loop:

- `soak-bot`: 90 % `fast__echo` (allowed by policy), 10 % a tool it does
  not have (refused);
- `judged-bot`: `fast__echo` under a `@judge` permit (every call asks the
  judge), at a twentieth of the rate.

Meanwhile: an admin write (an agent's grant flipped) every 10 s, a
`SIGHUP` reload every 60 s, and the sink down for `--sink-down` seconds
out of every `--sink-every`. Each window prints the calls/s, p50 and p99,
unexpected answers, toolgate's RSS and open descriptors. At the end the
sink must have every record of the audit log (`audit verify` counts them):
missing records fail the run; duplicates (at-least-once after a
reconnect) are counted.

    cargo build --release -p toolgate -p toolgate-loadtest
    .venv/bin/python loadtest/soak.py                   # an hour
    .venv/bin/python loadtest/soak.py --seconds 300     # five minutes

Needs rsyslog (Debian `rsyslog`) and the e2e test requirements
(`ingress/tests/e2e/requirements.txt`). Load goes to 127.0.0.1 only and
every process started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "ingress" / "tests" / "e2e"

POLICY = """
@id("echo-open")
permit(principal == Toolgate::Agent::"soak-bot", action == Toolgate::Action::"fast__echo", resource);
@id("echo-reviewed") @judge("review")
permit(principal == Toolgate::Agent::"judged-bot", action == Toolgate::Action::"fast__echo", resource);
@id("flip-open")
permit(principal == Toolgate::Agent::"flip-bot", action == Toolgate::Action::"fast__echo", resource);
"""


class Judge:
    """Allows every call it is asked about, and counts them."""

    def __init__(self, port: int) -> None:
        judge = self
        self.asked = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Head and body go out in two writes: without this, Nagle's
            # algorithm holds the body for the client's delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                judge.asked += 1
                body = b'{"decision":"allow"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}/judge"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def generator(loadtest: Path, url: str, key: str, rate: float, seconds: int, out: Path,
              connections: int, denied: bool) -> subprocess.Popen:
    argv = [str(loadtest), "run", "--url", url, "--key", key, "--tool", "fast__echo",
            "--duration", str(seconds), "--connections", str(connections), "--json", str(out)]
    if rate > 0:
        argv += ["--rate", f"{rate:.0f}"]
    if denied:
        argv += ["--denied", "fast__not_attached", "10"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, out: Path) -> dict:
    _, err = proc.communicate(timeout=700)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"the load generator failed ({proc.returncode}): {err.decode(errors='replace')}")
    return json.loads(out.read_text())


def seq_sink(rsyslog_cls, workdir: Path):
    """rsyslog over TCP writing only each record's `log_seq`, one per line:
    an hour of records would otherwise fill the disk twice over."""
    sink = rsyslog_cls(workdir)
    sink.tcp_out = workdir / "seqs.log"
    sink.conf.write_text(f"""global(workDirectory="{workdir / 'work'}" maxMessageSize="64k")
module(load="imtcp")
template(name="seq" type="string" string="%msg:R,ERE,1,BLANK:\\"log_seq\\":([0-9]+)--end%\\n")
ruleset(name="tcp") {{ action(type="omfile" file="{sink.tcp_out}" template="seq") }}
input(type="imtcp" address="127.0.0.1" port="{sink.tcp_port}" ruleset="tcp")
""")
    return sink


def delivered(path: Path, last: int) -> tuple[int, int]:
    """(records 1..`last` the sink has, duplicate lines) from its file."""
    seen = bytearray(last + 1)
    have = dups = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line.isdigit():
                continue
            n = int(line)
            if n > last:
                continue
            if seen[n]:
                dups += 1
            else:
                seen[n] = 1
                have += 1
    return have, dups


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=3600, help="how long to run (default 3600)")
    ap.add_argument("--window", type=int, default=60, help="seconds per report line (default 60)")
    ap.add_argument("--sink-down", type=int, default=120, help="seconds of each sink outage (default 120)")
    ap.add_argument("--sink-every", type=int, default=600, help="an outage starts every this many seconds")
    ap.add_argument("--toolgate", type=Path, default=REPO / "target" / "release" / "toolgate")
    ap.add_argument("--loadtest", type=Path, default=REPO / "target" / "release" / "toolgate-loadtest")
    ap.add_argument("--json", type=Path, help="write every window as a JSON line here too")
    args = ap.parse_args()
    for b in (args.toolgate, args.loadtest):
        if not b.exists():
            sys.exit(f"{b} not found: cargo build --release -p toolgate -p toolgate-loadtest")
    os.environ["TOOLGATE_BIN"] = str(args.toolgate)
    sys.path.insert(0, str(E2E))
    from harness import Agent, Gate, UpstreamCfg, free_port, new_api_key, rss_kib, stop_process, wait_for_port
    from syslog_collector import Rsyslog
    import httpx

    work = Path(tempfile.mkdtemp(prefix="toolgate-soak-"))
    print(f"working in {work}")
    started: list[subprocess.Popen] = []
    up_port = free_port()
    upstream = subprocess.Popen([str(args.loadtest), "upstream", "--listen", f"127.0.0.1:{up_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(upstream)
    wait_for_port(up_port, 10, upstream)
    judge = Judge(free_port())
    syslog = seq_sink(Rsyslog, work / "rsyslog").start()
    token, sha = new_api_key()
    admin_port = free_port()
    soak, judged = Agent("soak-bot", ["fast__echo"]), Agent("judged-bot", ["fast__echo"])
    flip = Agent("flip-bot", ["fast__echo"])
    extra = f"""
[admin]
listen = "127.0.0.1:{admin_port}"

[[admin.tokens]]
name = "ops"
token_sha256 = "{sha}"

[policies]
files = ["policy.cedar"]

[policies.judge]
url = "{judge.url}"
timeout_ms = 2000
"""
    gate = Gate(work / "gate", [UpstreamCfg("fast", f"http://127.0.0.1:{up_port}/mcp")], [soak, judged, flip],
                server={"max_connections_per_shard": 4096}, extra_toml=extra,
                # The log stays under 2 GiB: retention removes sealed
                # segments once the sink has them.
                audit={"retain_bytes": 2 << 30, "segment_bytes": 64 << 20},
                sinks=[{"name": "siem", "kind": "syslog", "transport": "tcp", "address": syslog.tcp_address}])
    (gate.workdir / "policy.cedar").write_text(POLICY)
    gate.start()
    wait_for_port(admin_port, 30, gate.proc)
    stop = threading.Event()
    counts = {"admin_writes": 0, "admin_errors": 0, "reloads": 0}
    windows: list[dict] = []
    try:
        # Saturation, closed loop, then half of it in open loop.
        sat_out = work / "saturation.json"
        sat = finish(generator(args.loadtest, gate.url, soak.key, 0, 10, sat_out, 32, True), sat_out)
        rate = sat["rps"] / 2
        print(f"saturation {sat['rps']:.0f} calls/s (p99 {sat['p99_us']} µs); soaking at {rate:.0f} calls/s "
              f"for {args.seconds} s")

        def admin_writes() -> None:
            with httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"}) as http:
                base = f"http://127.0.0.1:{admin_port}/v1/agents/flip-bot"
                grants = [[], ["fast__echo"]]
                while not stop.wait(10):
                    try:
                        version = http.get(base).json()["version"]
                        r = http.put(base, json={"tools": grants[counts["admin_writes"] % 2]},
                                     headers={"If-Match": f'"{version}"'})
                        counts["admin_writes" if r.status_code in (200, 202) else "admin_errors"] += 1
                    except (httpx.HTTPError, KeyError, ValueError):
                        counts["admin_errors"] += 1

        def reloads() -> None:
            while not stop.wait(60):
                gate.proc.send_signal(signal.SIGHUP)
                counts["reloads"] += 1

        for target in (admin_writes, reloads):
            threading.Thread(target=target, daemon=True).start()

        print(f"{'t s':>6} {'calls/s':>8} {'p50 µs':>7} {'p99 µs':>7} {'errors':>7} {'judged':>7} "
              f"{'sink':>5} {'RSS KiB':>9} {'fds':>5} {'admin':>6} {'reloads':>7}")
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < args.seconds:
            elapsed = time.monotonic() - t0
            window = int(min(args.window, args.seconds - elapsed))
            if window < 1:
                break
            # The sink is down for the first `sink_down` seconds of every
            # `sink_every`, from the second period on.
            phase = elapsed % args.sink_every
            sink_down = elapsed >= args.sink_every and phase < args.sink_down
            if sink_down and syslog.proc is not None and syslog.proc.poll() is None:
                syslog.stop()
            elif not sink_down and (syslog.proc is None or syslog.proc.poll() is not None):
                syslog.start()
            main_out, judged_out = work / f"w{n}.json", work / f"j{n}.json"
            g1 = generator(args.loadtest, gate.url, soak.key, rate * 0.95, window, main_out, 32, True)
            g2 = generator(args.loadtest, gate.url, judged.key, rate * 0.05, window, judged_out, 16, False)
            a, b = finish(g1, main_out), finish(g2, judged_out)
            row = {
                "t": round(time.monotonic() - t0), "rps": round(a["rps"] + b["rps"]), "p50_us": a["p50_us"],
                "p99_us": a["p99_us"], "judged_p99_us": b["p99_us"],
                "errors": sum(a["errors"].values()) + sum(b["errors"].values()),
                "error_kinds": {**a["errors"], **b["errors"]}, "judge_asked": judge.asked,
                "sink": "down" if sink_down else "up", "rss_kib": rss_kib(gate.proc.pid),
                "fds": fds(gate.proc.pid), **counts,
            }
            windows.append(row)
            print(f"{row['t']:>6} {row['rps']:>8} {row['p50_us']:>7} {row['p99_us']:>7} {row['errors']:>7} "
                  f"{row['judge_asked']:>7} {row['sink']:>5} {row['rss_kib']:>9} {row['fds']:>5} "
                  f"{row['admin_writes']:>6} {row['reloads']:>7}", flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            n += 1
        stop.set()
        if syslog.proc is None or syslog.proc.poll() is not None:
            syslog.start()
        # Every record of the log must reach the sink.
        verify = subprocess.run([str(args.toolgate), "audit", "verify", str(gate.audit_dir)],
                                capture_output=True, text=True, timeout=600)
        m = re.search(r"ok: (\d+) records", verify.stdout)
        if not m:
            print(f"audit verify failed:\n{verify.stdout}{verify.stderr}")
            return 1
        removed = re.search(r"records 1\.\.(\d+) were removed by retention", verify.stdout)
        kept = int(m.group(1))
        last = kept + (int(removed.group(1)) if removed else 0)
        deadline = time.monotonic() + 600
        while True:
            have, dups = delivered(syslog.tcp_out, last)
            if have == last or time.monotonic() > deadline:
                break
            time.sleep(5)
        missing = last - have
        print(f"audit log: {last} records ({kept} kept, chain and seals verified); the sink got {have} of them "
              f"({dups} duplicates after reconnects), {missing} missing")
        first, last = windows[1] if len(windows) > 1 else windows[0], windows[-1]
        print(f"RSS {first['rss_kib']} -> {last['rss_kib']} KiB, descriptors {first['fds']} -> {last['fds']} "
              f"(from the second window to the last); admin writes {counts['admin_writes']} "
              f"({counts['admin_errors']} failed), reloads {counts['reloads']}, judge asked {judge.asked} times")
        return 0 if missing == 0 and gate.alive() else 1
    finally:
        stop.set()
        gate.stop()
        syslog.stop()
        judge.stop()
        for p in started:
            stop_process(p)


if __name__ == "__main__":
    sys.exit(main())
