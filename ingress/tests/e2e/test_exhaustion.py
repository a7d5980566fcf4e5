"""Resource exhaustion: a slowloris of 2 000 sockets, each trickling a
request head that never ends, against a gate with a 3 s header timeout.

Checked while it lasts: a well-behaved client's calls all succeed and stay
fast (p99 measured and bounded), and toolgate's memory grows by less than
64 KiB per held socket. Then every slow socket gets its 408 (or is closed)
once the header timeout passes, and the gateway is still serving.
"""

from __future__ import annotations

import resource
import socket
import threading
import time

import httpx

from harness import HOST, modern_headers, modern_request, rss_kib

SLOW_SOCKETS = 2000
HEADER_TIMEOUT_MS = 3000
GOOD_CALLS = 100
TOOL = "crm__lookup_customer"


def test_slowloris_does_not_starve_well_behaved_clients(make_gate):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, SLOW_SOCKETS + 1024)), hard))
    gate = make_gate(server={"header_timeout_ms": HEADER_TIMEOUT_MS})
    support = gate.agents["support-bot"]
    headers = modern_headers("tools/call", TOOL, key=support.key)
    with httpx.Client(timeout=10.0) as http:
        assert http.post(gate.url, json=modern_request("tools/call", {"name": TOOL, "arguments": {
            "customer_id": "C-0"}}), headers=headers).status_code == 200
    rss_before = rss_kib(gate.proc.pid)

    slow: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(SLOW_SOCKETS):
            s = socket.create_connection((HOST, gate.port), timeout=5.0)
            s.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)

        def trickle() -> None:
            while not stop.is_set():
                for s in slow:
                    try:
                        s.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass
                stop.wait(0.5)

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        time.sleep(0.5)
        rss_held = rss_kib(gate.proc.pid)

        latencies = []
        with httpx.Client(timeout=10.0) as http:
            for i in range(GOOD_CALLS):
                started = time.monotonic()
                r = http.post(gate.url, json=modern_request("tools/call", {"name": TOOL, "arguments": {
                    "customer_id": f"C-{i}"}}), headers=headers)
                latencies.append(time.monotonic() - started)
                assert r.status_code == 200, r.text
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"\nslowloris of {SLOW_SOCKETS}: well-behaved p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms; RSS {rss_before} -> {rss_held} KiB "
              f"({(rss_held - rss_before) * 1024 // SLOW_SOCKETS} bytes per slow socket)")
        assert p99 < 0.5, latencies[-5:]
        assert (rss_held - rss_before) * 1024 < SLOW_SOCKETS * 64 * 1024, (rss_before, rss_held)
    finally:
        stop.set()

    # The header timeout ends every slow request: a 408, or the connection closed.
    time.sleep(HEADER_TIMEOUT_MS / 1000 + 1.5)
    ended = 0
    for s in slow:
        s.settimeout(2.0)
        try:
            data = s.recv(64)
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                ended += 1
        except OSError:
            ended += 1  # reset after the answer: closed too
        finally:
            s.close()
    assert ended == SLOW_SOCKETS, f"{SLOW_SOCKETS - ended} slow sockets still open past the header timeout"
    with httpx.Client(timeout=10.0) as http:
        r = http.post(gate.url, json=modern_request("tools/call", {"name": TOOL, "arguments": {
            "customer_id": "after"}}), headers=headers)
        assert r.status_code == 200, r.text
    assert gate.alive()
