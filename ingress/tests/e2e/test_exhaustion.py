"""Resource exhaustion, each attack checked while it lasts against a
well-behaved client whose calls must all succeed and stay fast (p99
measured and bounded), with toolgate's memory under a stated ceiling:

- a slowloris of 2 000 sockets trickling a request head that never ends,
  against a 3 s header timeout (under 64 KiB per socket; every slow socket
  gets its 408 once the timeout passes);
- as many idle connections as one process may hold here (up to 20 000,
  the open-file hard limit less a margin), each of them accepted and able
  to make a call (under 64 KiB per connection);
- two dozen clients posting 1 MiB bodies back to back, at the body limit
  and one byte over (under 4 MiB per client; every one gets its 400 or
  413, none a reset).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import socket
import threading
import time

import httpx

from harness import HOST, RawConn, http_request, modern_headers, modern_request, rss_kib

SLOW_SOCKETS = 2000
HEADER_TIMEOUT_MS = 3000
GOOD_CALLS = 100
TOOL = "crm__lookup_customer"


def good_calls(gate, headers, n: int) -> list[float]:
    """A well-behaved client's `n` calls, one after another: each must
    succeed; their latencies, seconds, sorted."""
    latencies = []
    with httpx.Client(timeout=10.0) as http:
        for i in range(n):
            started = time.monotonic()
            r = http.post(gate.url, json=modern_request("tools/call", {"name": TOOL, "arguments": {
                "customer_id": f"C-{i}"}}), headers=headers)
            latencies.append(time.monotonic() - started)
            assert r.status_code == 200, r.text
    return sorted(latencies)


def p50_p99(latencies: list[float]) -> tuple[float, float]:
    """The median and 99th percentile of sorted `latencies`."""
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


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

        latencies = good_calls(gate, headers, GOOD_CALLS)
        p50, p99 = p50_p99(latencies)
        print(f"\nslowloris of {SLOW_SOCKETS}: well-behaved p50 {p50 * 1000:.1f} ms, "
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


# --------------------------------------------------------------------------
# many held connections
# --------------------------------------------------------------------------

# As many as the open-file limit lets one process hold (the gateway holds
# one descriptor per connection, and so does this test's client side),
# capped at the 20 000 the target names.
HELD_MAX = 20_000
HELD_SPARE_FDS = 1_500
HELD_PER_CONN_CEILING = 64 * 1024


def held_count() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return min(HELD_MAX, hard - HELD_SPARE_FDS)


def test_thousands_of_held_connections_leave_the_gateway_serving(make_gate):
    """Connections opened and left idle, as many as a process may hold here:
    each is accepted and served (a sample sends a call on its own held
    connection), memory stays under 64 KiB per connection, a well-behaved
    client's calls stay fast, and closing them all leaves the gate serving."""
    n = held_count()
    assert n >= 10_000, f"open-file hard limit too low for this test: {resource.getrlimit(resource.RLIMIT_NOFILE)}"
    gate = make_gate(server={"max_connections_per_shard": n})
    support = gate.agents["support-bot"]
    headers = modern_headers("tools/call", TOOL, key=support.key)
    good_calls(gate, headers, 3)
    rss_before = rss_kib(gate.proc.pid)

    held: list[socket.socket] = []
    try:
        for _ in range(n):
            held.append(socket.create_connection((HOST, gate.port), timeout=10.0))
        # Accepted, not left in the kernel's backlog: the gate holds them.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and fd_count(gate.proc.pid) < n:
            time.sleep(0.1)
        assert fd_count(gate.proc.pid) >= n, (fd_count(gate.proc.pid), n)
        rss_held = rss_kib(gate.proc.pid)

        latencies = good_calls(gate, headers, GOOD_CALLS)
        p50, p99 = p50_p99(latencies)

        # Every 100th held connection makes a call of its own.
        body = json.dumps(modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-held"}}))
        sample = held[::100]
        for s in sample:
            s.sendall(http_request("POST", "/mcp", gate.port, body.encode(), headers=headers))
        answered = 0
        for s in sample:
            conn = RawConn.wrap(s)
            if conn.read_response().status == 200:
                answered += 1
        print(f"\n{n} held connections: RSS {rss_before} -> {rss_held} KiB "
              f"({(rss_held - rss_before) * 1024 // n} bytes per connection); well-behaved p50 "
              f"{p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {answered}/{len(sample)} held connections answered")
        assert answered == len(sample)
        assert (rss_held - rss_before) * 1024 < n * HELD_PER_CONN_CEILING, (rss_before, rss_held)
        assert p99 < 0.5, latencies[-5:]
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and fd_count(gate.proc.pid) > 1_000:
        time.sleep(0.1)
    assert fd_count(gate.proc.pid) < 1_000, "closed connections still held"
    good_calls(gate, headers, 3)
    assert gate.alive()


# --------------------------------------------------------------------------
# bodies at the limit from many clients
# --------------------------------------------------------------------------

BODY_CLIENTS = 24
BODY_SECONDS = 6.0
MAX_BODY = 1024 * 1024


def sized_call(size: int) -> bytes:
    """A whole HTTP request whose JSON-RPC body is exactly ``size`` bytes: a
    call of a tool the agent does not have, so the gateway reads and parses
    all of it and refuses it without an upstream."""
    skeleton = modern_request("tools/call", {"name": "crm__delete_record", "arguments": {"note": ""}})
    pad = size - len(json.dumps(skeleton, separators=(",", ":")))
    skeleton["params"]["arguments"]["note"] = "x" * pad
    body = json.dumps(skeleton, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def post_bodies(port: int, key: str, clients: int, seconds: float, results) -> None:
    """The attackers, in a process of their own (so that they do not share
    an interpreter lock with the well-behaved client being measured):
    `clients` threads posting bodies back to back for `seconds`; puts a
    count of (expected status, what came back) on `results`."""
    at_limit = sized_call(MAX_BODY)
    over = sized_call(MAX_BODY + 1)
    headers = modern_headers("tools/call", "crm__delete_record", key=key)
    deadline = time.monotonic() + seconds
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def client(i: int) -> None:
        body, want = (at_limit, 400) if i % 2 == 0 else (over, 413)
        conn = None
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = RawConn(port, timeout=15.0)
                conn.send(http_request("POST", "/mcp", port, body, headers=headers))
                r = conn.read_response()
                got = str(r.status)
                if r.status == 413 or r.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except OSError as e:
                got = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                outcomes[f"{want}:{got}"] = outcomes.get(f"{want}:{got}", 0) + 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(outcomes)


def test_many_clients_sending_bodies_at_the_limit(make_gate):
    """Two dozen clients post 1 MiB bodies back to back, half exactly at
    `max_body_bytes` (read, parsed and refused, 400: the tool is not
    attached) and half one byte over (413). Each gets the answer its body
    deserves, never a reset; a well-behaved client's calls succeed
    meanwhile; memory stays under 4 MiB per client."""
    gate = make_gate(server={"max_body_bytes": MAX_BODY})
    support = gate.agents["support-bot"]
    headers = modern_headers("tools/call", TOOL, key=support.key)
    good_calls(gate, headers, 3)
    rss_before = rss_kib(gate.proc.pid)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    attackers = ctx.Process(target=post_bodies, args=(gate.port, support.key, BODY_CLIENTS, BODY_SECONDS, results))
    attackers.start()
    peak = [rss_before]

    def watch_rss() -> None:
        while attackers.is_alive():
            peak[0] = max(peak[0], rss_kib(gate.proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    try:
        time.sleep(1.0)
        latencies = good_calls(gate, headers, GOOD_CALLS)
        outcomes = results.get(timeout=60)
    finally:
        attackers.join(timeout=30)
        if attackers.is_alive():
            attackers.kill()
        watcher.join(timeout=5)
    peak = peak[0]
    p50, p99 = p50_p99(latencies)
    print(f"\n{BODY_CLIENTS} clients posting 1 MiB bodies: {outcomes}; well-behaved p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms; RSS {rss_before} -> peak {peak} KiB")
    assert set(outcomes) == {"400:400", "413:413"}, outcomes
    assert outcomes["400:400"] >= BODY_CLIENTS // 2 and outcomes["413:413"] >= BODY_CLIENTS // 2, outcomes
    assert (peak - rss_before) * 1024 < BODY_CLIENTS * 4 * MAX_BODY, (rss_before, peak)
    assert p99 < 2.0, latencies[-5:]
    good_calls(gate, headers, 3)
    assert gate.alive()
