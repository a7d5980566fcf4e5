"""The control state on PostgreSQL: several gateway replicas share one
database (`[admin] backend = "postgres"`), against a real throw-away
PostgreSQL cluster (see pg_cluster.py) and two real toolgate replicas.

* a grant made through replica A's admin API is enforced on A and B (the
  official MCP SDK client calling through each), a revoke through B too;
* racing writers through the two replicas: exactly one wins each round, the
  other gets 412, no update lost;
* a restarted replica keeps the state; the password never sits in the
  config file (it comes from `[admin.postgres_password]`);
* revoke propagation across replicas: from the revoke's answer on B until A
  refuses, p99 over PG_REVOKES revokes (default 200, bounded in time).
"""

from __future__ import annotations

import os
import threading
import time

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import INVALID_PARAMS, MODERN_VERSION, Agent, free_port, new_api_key, sdk_client_cm, wait_for_port
from pg_cluster import PgCluster, pg_bin
from test_admin_api import TOOL, Admin, admin_toml, call, grant, lookup

pytestmark = pytest.mark.skipif(pg_bin() is None and os.environ.get("CI") != "true",
                                reason="PostgreSQL not installed (scripts/test installs it)")


@pytest.fixture
def pg():
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def replicas(make_gate, pg, tmp_path):
    """``replicas(n=2) -> (gates, admins, bot)``: n gateways on one database,
    the same agents, each with its own admin API; `support-bot` without
    `crm__delete_record` in the configuration file."""
    made: list[Admin] = []
    pwfile = tmp_path / "pg.password"
    pwfile.write_text(pg.password + "\n")
    os.chmod(pwfile, 0o600)
    agents = [Agent("support-bot", ["crm__lookup_customer"])]
    token, sha = new_api_key()

    def factory(n: int = 2, extra_toml: str = ""):
        gates, admins = [], []
        for _ in range(n):
            port = free_port()
            extra = (f'backend = "postgres"\npostgres_url = "{pg.url()}"\npoll_interval_ms = 100\n'
                     f'[admin.postgres_password]\nfile = "{pwfile}"\n')
            gate = make_gate(agents=agents, extra_toml=admin_toml(port, sha, extra) + extra_toml)
            gate.admin_port, gate.admin_token = port, token
            wait_for_port(port, 30, gate.proc)
            admin = Admin(port, token)
            made.append(admin)
            gates.append(gate)
            admins.append(admin)
        return gates, admins, agents[0]

    yield factory
    for a in made:
        a.close()


def wait_status(gate, bot, want: int, timeout: float = 1.0, http: httpx.Client | None = None) -> float:
    """Seconds until a call through `gate` answers `want` (fails past `timeout`)."""
    t0 = time.perf_counter()
    while True:
        got = call(gate, bot, http=http).status_code
        if got == want:
            return time.perf_counter() - t0
        assert time.perf_counter() - t0 < timeout, f"still {got} after {timeout}s, wanted {want}"
        time.sleep(0.002)


def sdk_allowed(gate, bot) -> bool:
    """Whether the official SDK client may call TOOL through `gate`."""
    async def go() -> bool:
        with anyio.fail_after(20):
            async with sdk_client_cm(gate.url, bot.key, MODERN_VERSION) as client:
                try:
                    await client.call_tool(TOOL, {"record_id": "R-1"})
                    return True
                except MCPError as e:
                    assert e.code == INVALID_PARAMS and e.message.startswith("Unknown tool"), e
                    return False
    return anyio.run(go)


def test_grant_on_one_replica_and_revoke_on_the_other_apply_to_both(replicas, pg):
    (a, b), (admin_a, admin_b), bot = replicas()
    assert not sdk_allowed(a, bot) and not sdk_allowed(b, bot)
    r = grant(admin_a, "support-bot", ["crm__lookup_customer", TOOL], 0)
    assert r.status_code == 200, r.text
    version = int(r.headers["etag"].strip('"'))
    assert r.json()["shards"] == {"total": 2, "pending": []}
    assert call(a, bot).status_code == 200, "A enforces its own grant when it answers"
    waited = wait_status(b, bot, 200, timeout=1.0)
    assert sdk_allowed(a, bot) and sdk_allowed(b, bot)
    # B reads the same resource at the same version.
    assert admin_b.version("agents/support-bot") == version
    assert admin_b.get("agents/support-bot").json()["source"] == "store"
    # The revoke through B, with A's version: B is at it already.
    r = grant(admin_b, "support-bot", ["crm__lookup_customer"], version)
    assert r.status_code == 200, r.text
    assert call(b, bot).status_code == 400
    waited_revoke = wait_status(a, bot, 400, timeout=1.0)
    assert not sdk_allowed(a, bot) and not sdk_allowed(b, bot)
    # A stale write through A (the version B replaced) is refused.
    r = grant(admin_a, "support-bot", ["crm__lookup_customer", TOOL], version)
    assert r.status_code == 412, r.text
    assert r.json()["error"]["current_version"] > version
    assert call(a, bot).status_code == 400 and call(b, bot).status_code == 400
    # The state is in the database, one row per resource.
    assert pg.psql("SELECT kind || '/' || id FROM toolgate_control_resources", db="toolgate").split() == [
        "agents/support-bot"]
    print(f"\ngrant A->B {waited * 1000:.1f} ms, revoke B->A {waited_revoke * 1000:.1f} ms")


@pytest.mark.parametrize("through", ["one-replica", "two-replicas"])
def test_racing_writers_exactly_one_wins_each_round(replicas, through):
    (a, b), (admin_a, admin_b), _ = replicas()
    r = admin_a.put("users/racer", {"groups": ["start"]})
    assert r.status_code == 200, r.text
    ports = [a.admin_port, a.admin_port if through == "one-replica" else b.admin_port]
    clients = [Admin(p, a.admin_token) for p in ports]
    try:
        for rnd in range(40):
            version = clients[rnd % 2].version("users/racer")
            barrier = threading.Barrier(2)
            answers: list[httpx.Response | None] = [None, None]

            def write(i: int) -> None:
                barrier.wait(timeout=10)
                answers[i] = clients[i].put("users/racer", {"groups": [f"r{rnd}-c{i}"]}, version)

            threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert all(answers), "both writers answered"
            statuses = sorted(x.status_code for x in answers if x)
            assert statuses == [200, 412], f"round {rnd}: {[x.text for x in answers if x]}"
            winner = next(i for i, x in enumerate(answers) if x and x.status_code == 200)
            loser = answers[1 - winner]
            assert loser is not None
            err = loser.json()["error"]
            assert err["code"] == "version_conflict"
            new_version = int(answers[winner].headers["etag"].strip('"'))  # type: ignore[union-attr]
            assert err["current_version"] == new_version > version
            # No lost update, as both replicas read it.
            for c in (admin_a, admin_b):
                now = c.get("users/racer").json()
                assert now["version"] == new_version
                assert now["spec"]["groups"] == [f"r{rnd}-c{winner}"]
    finally:
        for c in clients:
            c.close()


def test_a_restarted_replica_keeps_the_state(replicas):
    (a, b), (admin_a, admin_b), bot = replicas()
    r = grant(admin_a, "support-bot", ["crm__lookup_customer", TOOL], 0)
    assert r.status_code == 200, r.text
    version = int(r.headers["etag"].strip('"'))
    wait_status(b, bot, 200)
    assert "s3cret" not in a.config_path.read_text(), "the password is not in the config file"
    a.stop()
    # A change while A is down reaches A when it starts again.
    r = admin_b.put("users/alice", {"groups": ["support"]})
    assert r.status_code == 200, r.text
    a.start()
    wait_for_port(a.admin_port, 30, a.proc)
    assert admin_a.version("agents/support-bot") == version
    assert admin_a.get("users/alice").json()["spec"] == {"groups": ["support"]}
    assert call(a, bot).status_code == 200, "the grant is still in force after the restart"
    # Both restarted: the database alone holds it.
    a.stop()
    b.stop()
    b.start()
    wait_for_port(b.admin_port, 30, b.proc)
    assert call(b, bot).status_code == 200
    assert admin_b.version("agents/support-bot") == version


class _Chain:
    """Successive writes of one resource with If-Match, keeping what each
    answer says. Versions are the control state's revisions, shared by
    every resource: a 200 must name a newer one than the chain's last,
    never one any write already took; after a failed write (its commit
    unknown), the next one either succeeds from the same version (the
    failed one did not commit) or gets 412 naming a newer version whose
    content is the failed write's (it committed, once)."""

    taken: set[int] = set()
    lock = threading.Lock()

    def __init__(self, admin: Admin, path: str, version: int) -> None:
        self.admin, self.path, self.version = admin, path, version
        self.pending: str | None = None  # the content of a write whose outcome is unknown
        self.n = 0
        self.ok = 0
        self.failed = 0
        self._take(version)

    def _take(self, version: int) -> None:
        with _Chain.lock:
            assert version not in _Chain.taken, f"{self.path}: version {version} taken twice"
            _Chain.taken.add(version)

    def write(self) -> int:
        self.n += 1
        groups = [f"w{self.n}"]
        r = self.admin.put(self.path, {"groups": groups}, self.version)
        if r.status_code == 200:
            new = int(r.headers["etag"].strip('"'))
            assert new > self.version, f"{self.path}: version {self.version} -> {new}"
            self._take(new)
            self.version, self.pending = new, None
            self.ok += 1
        elif r.status_code == 412:
            current = r.json()["error"]["current_version"]
            assert self.pending is not None, f"{self.path}: 412 with no write in doubt: {r.text}"
            assert current > self.version, f"{self.path}: in-doubt write left version {current}"
            doc = self.admin.get(self.path).json()
            assert doc["version"] == current and doc["spec"]["groups"] == [self.pending], doc
            self._take(current)
            self.version, self.pending = current, None
        else:
            assert r.status_code in (500, 502, 503, 504), r.text
            self.failed += 1
            self.pending = self.pending or groups[0]
        return r.status_code


def test_postgres_restarted_during_writes_loses_and_duplicates_nothing(replicas, pg):
    """PostgreSQL stopped (fast shutdown, sessions cut) and started again
    while both replicas write: writes fail cleanly while it is down, none is
    half-applied, no version is lost or taken twice, writing resumes without
    restarting toolgate, and both replicas converge on the database's state."""
    (a, b), (admin_a, admin_b), _ = replicas()
    for admin, path in ((admin_a, "users/front"), (admin_b, "users/back")):
        assert admin.put(path, {"groups": ["w0"]}).status_code == 200
    front = _Chain(admin_a, "users/front", admin_a.version("users/front"))
    back = _Chain(Admin(b.admin_port, b.admin_token), "users/back", admin_b.version("users/back"))
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            if back.write() != 200:
                time.sleep(0.05)

    t = threading.Thread(target=background, daemon=True)
    t.start()
    try:
        for _ in range(10):
            assert front.write() == 200
        pg.halt()
        # Down: refused cleanly and soon, never answered as written.
        for _ in range(3):
            started = time.monotonic()
            assert front.write() in (500, 502, 503, 504)
            assert time.monotonic() - started < 12
        pg.launch()
        deadline = time.monotonic() + 30
        while front.write() != 200:
            assert time.monotonic() < deadline, "writes did not resume within 30 s of PostgreSQL's return"
            time.sleep(0.2)
        for _ in range(10):
            assert front.write() == 200
        resumed = back.ok
        deadline = time.monotonic() + 30
        while back.ok < resumed + 5:
            assert time.monotonic() < deadline, "the other replica's writes did not resume"
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(timeout=30)
        back.admin.close()
    assert back.pending is None or back.write() in (200, 412)
    assert front.failed >= 3
    # The database holds each resource once, at the version the last answer named.
    rows = dict(line.split("|") for line in pg.psql(
        "SELECT kind || '/' || id, version FROM toolgate_control_resources ORDER BY 1", db="toolgate").split())
    assert rows == {"users/back": str(back.version), "users/front": str(front.version)}, rows
    # Every revision went to one write that someone was told of (or resolved).
    revision = int(pg.psql("SELECT revision FROM toolgate_control_meta", db="toolgate").strip())
    assert revision == max(_Chain.taken), (revision, max(_Chain.taken))
    # Both replicas converge on it.
    deadline = time.monotonic() + 10
    while True:
        seen = [(c.version("users/front"), c.version("users/back")) for c in (admin_a, admin_b)]
        if seen == [(front.version, back.version)] * 2:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)


def test_revoke_propagation_across_replicas(replicas):
    """Time from a revoke's answer on replica B until replica A refuses the
    tool (A polls with the agent's calls). PG_REVOKES sets the count (default
    200); the loop stops after PG_REVOKE_SECONDS (default 120). Printed with -s."""
    n = int(os.environ.get("PG_REVOKES", "200"))
    budget = float(os.environ.get("PG_REVOKE_SECONDS", "120"))
    (a, b), (_, admin_b), bot = replicas()
    version = 0
    lags: list[float] = []
    puts: list[float] = []
    started = time.monotonic()
    with httpx.Client(timeout=10.0) as http:
        for _ in range(n):
            if time.monotonic() - started > budget:
                break
            r = grant(admin_b, "support-bot", ["crm__lookup_customer", TOOL], version)
            assert r.status_code == 200, r.text
            version = int(r.headers["etag"].strip('"'))
            wait_status(a, bot, 200, timeout=1.0, http=http)
            t_put = time.perf_counter()
            r = grant(admin_b, "support-bot", ["crm__lookup_customer"], version)
            assert r.status_code == 200, r.text
            t0 = time.perf_counter()
            puts.append(t0 - t_put)
            version = int(r.headers["etag"].strip('"'))
            wait_status(a, bot, 400, timeout=1.0, http=http)
            lags.append(time.perf_counter() - t0)

    def pct(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * p))]

    assert len(lags) >= min(n, 20), len(lags)
    print(f"\nrevoke propagation B->A over {len(lags)} revokes (postgres, LISTEN/NOTIFY + 100 ms poll): "
          f"p50 {pct(lags, .5) * 1000:.1f} ms, p99 {pct(lags, .99) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms; "
          f"the revoke PUT on B (plan on the newest state, SQL commit, publish to B's shards, audit) "
          f"p50 {pct(puts, .5) * 1000:.1f} ms, p99 {pct(puts, .99) * 1000:.1f} ms")
    assert pct(lags, .99) < 1.0


def test_subtoken_minted_on_one_replica_revoked_on_the_other(replicas, tmp_path):
    """Sub-tokens are resources like the others: minted through A, they work
    on A and B (which share `[auth.subtokens]`'s key); revoked through B, A
    refuses them within a second, as a 401 audited `token_revoked`."""
    shared = f'[auth.subtokens]\ndir = "{tmp_path / "subtokens"}"\n'
    (a, b), (admin_a, admin_b), _ = replicas(extra_toml=shared)
    r = admin_a.http.post(f"{admin_a.base}/subtokens", json={"agent": "support-bot", "ttl_s": 600})
    assert r.status_code == 200, r.text
    token, jti = r.json()["token"], r.json()["id"]
    assert lookup(a, token).status_code == 200 and lookup(b, token).status_code == 200
    version = admin_b.version(f"subtokens/{jti}")
    r = admin_b.http.post(f"{admin_b.base}/subtokens/{jti}/revoke", headers={"If-Match": f'"{version}"'})
    assert r.status_code == 200, r.text
    assert lookup(b, token).status_code == 401
    deadline = time.monotonic() + 1.0
    while lookup(a, token).status_code == 200:
        assert time.monotonic() < deadline, "A still accepts the revoked token after 1 s"
        time.sleep(0.01)
    before = a.audit_len()
    assert lookup(a, token).status_code == 401
    [rec] = a.audit_after(before)
    assert rec["reason"] == "token_revoked"
    # A stale revoke through A is refused: B's revoke moved the version on.
    r = admin_a.http.post(f"{admin_a.base}/subtokens/{jti}/revoke", headers={"If-Match": f'"{version}"'})
    assert r.status_code == 412 and r.json()["error"]["current_version"] > version, r.text


def test_postgres_backend_config_errors(make_gate, tmp_path):
    """A password in the URL, or no URL, is refused at start with the line."""
    import subprocess

    from harness import TOOLGATE_BIN
    token, sha = new_api_key()
    for extra, want in [
        ('backend = "postgres"\npostgres_url = "postgres://u:pw@127.0.0.1:5432/db"\n', "must not hold a password"),
        ('backend = "postgres"\n', "needs `admin.postgres_url`"),
        ('backend = "mysql"\n', "unknown variant"),
    ]:
        gate = make_gate(start=False, extra_toml=admin_toml(free_port(), sha, extra))
        r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(gate.config_path)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0
        assert want in r.stderr + r.stdout, r.stderr + r.stdout
