"""Quotas shared by two toolgate replicas through a real Redis (Debian's
``redis-server``, started here with a password): a customer's day quota
holds across both replicas within the documented bound (one lease per
replica), another customer is unaffected; with Redis killed, each replica
keeps limiting to its share and nothing crashes; when Redis is back, the
units granted meanwhile are added to the shared count. A rate is shared the
same way: two replicas hammered by one client allow, together, the rate
plus the documented bound, and without Redis each holds to its share.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest

from harness import HOST, HTTP_TIMEOUT_S, Agent, free_port, modern_headers, modern_request, stop_process, wait_for_port

TOOL = "crm__lookup_customer"
UNITS = 40
LEASE = 5
PASSWORD = "redis-test-password"

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class Redis:
    """``redis-server`` on a free port, no persistence, with a password."""

    def __init__(self, workdir) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Redis":
        log = open(self.workdir / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--requirepass", PASSWORD, "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        wait_for_port(self.port, 30, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def get(self, key: str) -> int:
        out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(self.port), "--no-auth-warning", "-a", PASSWORD,
                              "GET", key], capture_output=True, text=True, timeout=10).stdout.strip()
        return int(out) if out else 0


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


DAY_QUOTA = f'id = "day"\ncustomer = "*"\nquota = {{ units = {UNITS}, per = "day" }}\n'


def limits_toml(crm_url: str, redis_port: int, rule: str = DAY_QUOTA) -> str:
    """Two replicas' configuration: the crm upstream, limits shared through
    the Redis on ``redis_port`` (its password from a file), and ``rule``."""
    return f"""
[[upstreams]]
name = "crm"
url = "{crm_url}"

[limits]
backend = "redis"

[limits.redis]
url = "redis://{HOST}:{redis_port}/0"
password = {{ file = "redis.password" }}
lease = {LEASE}
replicas = 2

[[limits.rules]]
{rule}"""


def replicas(make_gate, agents, toml: str) -> list:
    """Two gateways with configuration ``toml``, each with the Redis
    password in its own file."""
    gates = []
    for _ in range(2):
        g = make_gate(upstream_list=[], agents=agents, extra_toml=toml, start=False)
        (g.workdir / "redis.password").write_text(PASSWORD + "\n")
        g.start()
        gates.append(g)
    return gates


def call(gate, key: str) -> int:
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})
    r = httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, key), timeout=HTTP_TIMEOUT_S)
    return r.status_code


def key_of(customer: str) -> str:
    return f"toolgate:quota:day:{int(time.time()) // 86400}:{customer}"


def test_a_day_quota_is_shared_by_two_replicas_and_survives_redis_going_away(make_gate, upstreams, redis):
    agents = [Agent("acme-bot", [TOOL], customer="acme"), Agent("globex-bot", [TOOL], customer="globex"),
              Agent("initech-bot", [TOOL], customer="initech")]
    gates = replicas(make_gate, agents, limits_toml(upstreams["crm"].url, redis.port))
    acme, globex, initech = agents

    # 1. Both replicas, one customer: the sum of allowed calls stays within
    # one lease per replica of the quota.
    allowed = 0
    for i in range(UNITS + 30):
        allowed += call(gates[i % 2], acme.key) == 200
        time.sleep(0.005)
    assert UNITS - 2 * LEASE <= allowed <= UNITS + 2 * LEASE, allowed
    assert redis.get(key_of("acme")) <= UNITS + 2 * LEASE
    # Another customer is unaffected.
    assert call(gates[0], globex.key) == 200 and call(gates[1], globex.key) == 200

    # 2. Redis goes away: each replica holds a new customer to its share
    # (UNITS / 2), nothing crashes, and it says so.
    redis.stop()
    during = [0, 0]
    for i in range(UNITS + 20):
        during[i % 2] += call(gates[i % 2], initech.key) == 200
        time.sleep(0.005)
    assert all(0 < n <= UNITS // 2 for n in during), during
    for g in gates:
        assert g.alive()
        err = g.stderr_text()
        assert "lost Redis" in err or "Redis unreachable" in err, err
        assert err.count("Redis unreachable") <= 1, "an outage is logged once, not per retry"

    # 3. Redis is back (empty: no persistence): what the replicas granted
    # meanwhile is added to the shared count.
    redis.start()
    deadline = time.monotonic() + 15
    while redis.get(key_of("initech")) < sum(during) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis.get(key_of("initech")) >= sum(during)
    # Reachable at start, and again after the outage.
    assert all(g.stderr_text().count("Redis reachable") >= 2 for g in gates)


RATE, BURST = 10, 10


RATE_RULE = f'id = "rps"\ncustomer = "*"\nrate = {{ calls_per_s = {RATE}, burst = {BURST} }}\n'


def hammer(gates, key: str, seconds: float) -> tuple[list[int], float, set]:
    """Calls as fast as one client can, alternating between the replicas,
    for ``seconds``: calls allowed per replica, the time taken, and the
    statuses seen."""
    allowed, statuses = [0] * len(gates), set()
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})
    headers = modern_headers("tools/call", TOOL, key)
    clients = [httpx.Client(timeout=HTTP_TIMEOUT_S) for _ in gates]
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        r = clients[i % len(gates)].post(gates[i % len(gates)].url, json=body, headers=headers)
        statuses.add(r.status_code)
        if r.status_code == 200:
            allowed[i % len(gates)] += 1
        else:
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, (r.status_code, r.text)
        i += 1
    took = time.monotonic() - start
    for c in clients:
        c.close()
    return allowed, took, statuses


def test_a_rate_is_shared_by_two_replicas_and_held_to_each_share_without_redis(make_gate, upstreams, redis):
    agents = [Agent("acme-bot", [TOOL], customer="acme"), Agent("globex-bot", [TOOL], customer="globex")]
    gates = replicas(make_gate, agents, limits_toml(upstreams["crm"].url, redis.port, RATE_RULE))
    acme, globex = agents
    # Each replica's share: RATE / 2 calls/s, a burst of BURST / 2. The
    # documented bound over both: RATE × t + BURST, plus the shares' bursts.
    share_burst = BURST // 2

    # 1. Both replicas, one customer, far more calls than the rate: the sum
    # stays within the bound, where two unshared replicas would allow twice
    # RATE × t + BURST.
    allowed, took, statuses = hammer(gates, acme.key, 4.0)
    total = sum(allowed)
    bound = RATE * took + BURST + 2 * share_burst
    print(f"shared: allowed {allowed} in {took:.2f} s, bound {bound:.0f}")
    assert statuses == {200, 429}
    assert total <= bound, (allowed, took)
    assert total >= 0.7 * RATE * took, ("the replicas let through far less than the rate", allowed, took)
    assert all(n > 0 for n in allowed), allowed
    # The bucket lives in Redis, in Redis's clock.
    assert redis.get("toolgate:rate:rps:acme") > 0
    # Another customer has its own bucket.
    assert call(gates[0], globex.key) == 200 and call(gates[1], globex.key) == 200

    # 2. Redis goes away: each replica holds the rate to its share, nothing
    # crashes.
    redis.stop()
    time.sleep(1.1)
    allowed, took, _ = hammer(gates, acme.key, 3.0)
    print(f"without Redis: allowed {allowed} in {took:.2f} s")
    for n in allowed:
        assert n <= RATE / 2 * took + share_burst + LEASE, (allowed, took)
    assert all(n >= 0.5 * RATE / 2 * took for n in allowed), (allowed, took)
    assert all(g.alive() for g in gates)

    # 3. Redis is back: the replicas share the bucket again.
    redis.start()
    time.sleep(2.5)
    allowed, took, _ = hammer(gates, acme.key, 3.0)
    print(f"Redis back: allowed {allowed} in {took:.2f} s")
    assert sum(allowed) <= RATE * took + BURST + 2 * share_burst, (allowed, took)
    assert redis.get("toolgate:rate:rps:acme") > 0
