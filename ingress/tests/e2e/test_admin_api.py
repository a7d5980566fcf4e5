"""The admin API end to end: run-time grants and revokes with optimistic
locking, against the real binary, two shards, the SDK upstreams and the
official MCP SDK as the agent.

* racing writers: exactly one wins each round, the other gets 412, no update lost;
* a tool granted while an SDK client calls in a loop works from the grant's
  answer on, and no call started after the revoke's answer succeeds;
* the control state survives a restart;
* bad input is refused with a machine-readable error and changes nothing;
* every change is an audit record in the same hash-chained log;
* the CLI: grant, revoke, get, and declarative `toolgate apply -f DIR`;
* revoke propagation (PUT to every shard on the new generation), p99 over 1000 revokes.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from mcp.shared.exceptions import MCPError

from certs import issue, make_ca, server_cert
from conftest import upstream_cfgs
from harness import (
    HOST,
    INVALID_PARAMS,
    MODERN_VERSION,
    TOOLGATE_BIN,
    UNAUTHORIZED,
    Agent,
    assert_jsonrpc_error,
    free_port,
    modern_headers,
    modern_request,
    new_api_key,
    sdk_client_cm,
    wait_for_port,
)

TOOL = "crm__delete_record"


class Admin:
    """An admin API client bound to one gate."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://{HOST}:{port}/v1"
        self.token = token
        self.http = httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"})

    def get(self, path: str) -> httpx.Response:
        return self.http.get(f"{self.base}/{path}")

    def put(self, path: str, doc, version: int | None = None, **kw) -> httpx.Response:
        headers = {"If-Match": f'"{version}"'} if version is not None else {"If-None-Match": "*"}
        headers.update(kw.pop("headers", {}))
        return self.http.put(f"{self.base}/{path}", json=doc, headers=headers, **kw)

    def delete(self, path: str, version: int) -> httpx.Response:
        return self.http.delete(f"{self.base}/{path}", headers={"If-Match": f'"{version}"'})

    def version(self, path: str) -> int:
        r = self.get(path)
        assert r.status_code == 200, r.text
        assert r.headers["etag"] == f'"{r.json()["version"]}"'
        return r.json()["version"]

    def close(self) -> None:
        self.http.close()


def admin_toml(port: int, token_sha: str, extra: str = "") -> str:
    return (
        f'[admin]\nlisten = "{HOST}:{port}"\n{extra}\n'
        f'[[admin.tokens]]\nname = "ops"\ntoken_sha256 = "{token_sha}"\n'
    )


@pytest.fixture
def admin_gate(make_gate, upstreams):
    """``admin_gate(agents=None) -> (gate, Admin, agents)``: a gate with the
    admin API on, `support-bot` without `crm__delete_record`."""
    made: list[Admin] = []

    def factory(agents=None, extra_toml: str = "", admin_extra: str = ""):
        token, sha = new_api_key()
        port = free_port()
        agents = agents or [Agent("support-bot", ["crm__lookup_customer"])]
        gate = make_gate(agents=agents, extra_toml=admin_toml(port, sha, admin_extra) + extra_toml)
        try:
            wait_for_port(port, 30, gate.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}\n{gate.stderr_text()}") from e
        admin = Admin(port, token)
        made.append(admin)
        gate.admin_port, gate.admin_token = port, token
        return gate, admin, {a.id: a for a in agents}

    yield factory
    for a in made:
        a.close()


def call(gate, agent: Agent, tool: str = TOOL, http: httpx.Client | None = None) -> httpx.Response:
    body = modern_request("tools/call", {"name": tool, "arguments": {"record_id": "R-1"}})
    c = http or httpx.Client(timeout=10.0)
    try:
        return c.post(gate.url, json=body, headers=modern_headers("tools/call", tool, agent.key))
    finally:
        if http is None:
            c.close()


def grant(admin: Admin, agent: str, tools: list[str], version: int) -> httpx.Response:
    return admin.put(f"agents/{agent}", {"tools": tools}, version)


# --------------------------------------------------------------------------
# optimistic locking
# --------------------------------------------------------------------------


def test_racing_writers_exactly_one_wins_each_round(admin_gate):
    gate, admin, _ = admin_gate()
    r = admin.put("users/racer", {"groups": ["start"]})
    assert r.status_code == 200, r.text
    clients = [Admin(gate.admin_port, gate.admin_token) for _ in range(2)]
    try:
        for rnd in range(60):
            version = admin.version("users/racer")
            barrier = threading.Barrier(2)
            answers: list[tuple[int, httpx.Response] | None] = [None, None]

            def write(i: int) -> None:
                barrier.wait(timeout=10)
                answers[i] = (i, clients[i].put("users/racer", {"groups": [f"r{rnd}-c{i}"]}, version))

            threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=20)
            statuses = sorted(a[1].status_code for a in answers if a)
            assert statuses == [200, 412], f"round {rnd}: {[a[1].text for a in answers if a]}"
            winner = next(a for a in answers if a and a[1].status_code == 200)
            loser = next(a for a in answers if a and a[1].status_code == 412)
            err = loser[1].json()["error"]
            assert err["code"] == "version_conflict"
            new_version = int(winner[1].headers["etag"].strip('"'))
            assert err["current_version"] == new_version > version
            now = admin.get("users/racer").json()
            # No lost update: what is stored is exactly the winner's write.
            assert now["version"] == new_version
            assert now["spec"]["groups"] == [f"r{rnd}-c{winner[0]}"]
    finally:
        for c in clients:
            c.close()


# --------------------------------------------------------------------------
# grant and revoke under an SDK client's load
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
def test_grant_then_revoke_while_sdk_client_calls(admin_gate, mode):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    calls: list[tuple[float, float, bool, str]] = []
    marks: dict[str, float] = {}
    stop = threading.Event()

    async def loop(client) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                await client.call_tool(TOOL, {"record_id": "R-1"})
                calls.append((t0, time.monotonic(), True, ""))
            except MCPError as e:
                assert e.code == INVALID_PARAMS and e.message.startswith("Unknown tool"), e
                calls.append((t0, time.monotonic(), False, e.message))

    def settle(since: float, n: int = 5) -> None:
        """Wait until `n` calls started after `since` have finished (bounded)."""
        deadline = time.monotonic() + 20
        while sum(1 for c in list(calls) if c[0] > since) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def control() -> None:
        settle(0.0)
        version = admin.version("agents/support-bot")
        assert version == 0, "only the configuration file defines it so far"
        marks["grant_sent"] = time.monotonic()
        r = grant(admin, "support-bot", ["crm__lookup_customer", TOOL], version)
        marks["grant_done"] = time.monotonic()
        assert r.status_code == 200, r.text
        assert r.json()["shards"] == {"total": 2, "pending": []}
        settle(marks["grant_done"])
        version = int(r.headers["etag"].strip('"'))
        marks["revoke_sent"] = time.monotonic()
        r = grant(admin, "support-bot", ["crm__lookup_customer"], version)
        marks["revoke_done"] = time.monotonic()
        assert r.status_code == 200, r.text
        settle(marks["revoke_done"])

    async def scenario() -> None:
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, bot.key, mode) as client:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(loop, client)
                    try:
                        await anyio.to_thread.run_sync(control)
                    finally:
                        stop.set()

    anyio.run(scenario)
    before = [c for c in calls if c[1] < marks["grant_sent"]]
    granted = [c for c in calls if c[0] > marks["grant_done"] and c[1] < marks["revoke_sent"]]
    after = [c for c in calls if c[0] > marks["revoke_done"]]
    assert before and granted and after, (len(before), len(granted), len(after))
    assert not any(ok for _, _, ok, _ in before), "refused before the grant"
    assert all(ok for _, _, ok, _ in granted), "allowed between grant and revoke"
    assert not any(ok for _, _, ok, _ in after), "no call started after the revoke's answer succeeds"


# --------------------------------------------------------------------------
# persistence, audit, CLI
# --------------------------------------------------------------------------


def test_control_state_survives_a_restart(admin_gate):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    assert call(gate, bot).status_code == 400
    r = grant(admin, "support-bot", ["crm__lookup_customer", TOOL], 0)
    assert r.status_code == 200, r.text
    version = int(r.headers["etag"].strip('"'))
    assert call(gate, bot).status_code == 200
    assert (gate.workdir / "state" / "control.redb").is_file()
    gate.stop()
    gate.start()
    # The admin listener opens just after the agents' one that start() waits for.
    wait_for_port(gate.admin_port, 30, gate.proc)
    assert admin.version("agents/support-bot") == version
    assert admin.get("agents/support-bot").json()["source"] == "store"
    assert call(gate, bot).status_code == 200, "the grant is still in force after the restart"
    # Deleting the store's version brings back the configuration file's.
    assert admin.delete("agents/support-bot", version).status_code == 200
    assert admin.get("agents/support-bot").json() == {
        "kind": "agents", "id": "support-bot", "version": 0, "source": "config",
        "spec": {"tools": ["crm__lookup_customer"], "groups": [], "act_for_users": False},
    }
    assert call(gate, bot).status_code == 400


def test_changes_are_audit_records_in_the_same_chain(admin_gate):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    r = grant(admin, "support-bot", ["crm__lookup_customer", TOOL], 0)
    assert r.status_code == 200
    assert call(gate, bot).status_code == 200
    v = int(r.headers["etag"].strip('"'))
    assert grant(admin, "support-bot", ["crm__lookup_customer"], v).status_code == 200
    out = subprocess.run([str(TOOLGATE_BIN), "audit", "query", str(gate.audit_dir), "--json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    records = [json.loads(line) for line in out.splitlines()]
    changes = [r["admin"] for r in records if "admin" in r]
    assert [(c["actor"], c["op"], c["kind"], c["id"], c["old_version"], c["new_version"]) for c in changes] == [
        ("ops", "put", "agents", "support-bot", None, v),
        ("ops", "put", "agents", "support-bot", v, v + 1),
    ]
    assert changes[0]["diff"]["tools"] == {"added": ["crm__lookup_customer", TOOL]}
    assert changes[1]["diff"] == {"tools": {"removed": [TOOL]}}
    assert len(changes[1]["digest"]) == 64
    admin_recs = [r for r in records if "admin" in r]
    assert all(r["method"] == "admin/put" and r["reason"] == "admin_change" for r in admin_recs)
    assert any(r.get("tool") == TOOL and r["decision"] == "allow" for r in records)
    human = subprocess.run([str(TOOLGATE_BIN), "audit", "query", str(gate.audit_dir)],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert "admin actor=ops put agents/support-bot" in human
    gate.stop()
    verify = subprocess.run([str(TOOLGATE_BIN), "audit", "verify", str(gate.audit_dir)],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def cli(gate, *args: str, cwd: Path | None = None, scheme: str = "http") -> subprocess.CompletedProcess:
    env = {**os.environ, "TOOLGATE_ADMIN_TOKEN": gate.admin_token}
    return subprocess.run([str(TOOLGATE_BIN), *args, "--url", f"{scheme}://{HOST}:{gate.admin_port}"],
                          capture_output=True, text=True, timeout=30, env=env, cwd=cwd)


def test_cli_grant_revoke_get_and_apply_dir(admin_gate, tmp_path):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    r = cli(gate, "admin", "grant", "support-bot", TOOL)
    assert r.returncode == 0, r.stderr
    assert call(gate, bot).status_code == 200
    r = cli(gate, "admin", "get", "agents/support-bot")
    assert r.returncode == 0 and json.loads(r.stdout)["spec"]["tools"][-1] == TOOL
    r = cli(gate, "admin", "revoke", "support-bot", TOOL)
    assert r.returncode == 0, r.stderr
    assert call(gate, bot).status_code == 400
    r = cli(gate, "admin", "revoke", "support-bot", TOOL)
    assert r.returncode != 0 and "does not have" in r.stderr
    # Declarative: a directory of resource files.
    d = tmp_path / "state"
    (d / "agents").mkdir(parents=True)
    (d / "users").mkdir()
    (d / "policies").mkdir()
    (d / "agents" / "support-bot.json").write_text(json.dumps({"tools": ["crm__lookup_customer", TOOL], "groups": ["support"]}))
    (d / "users" / "alice.json").write_text(json.dumps({"groups": ["admins"]}))
    (d / "policies" / "main.cedar").write_text("permit(principal, action, resource);\n")
    r = cli(gate, "apply", "-f", str(d), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "~ agents/support-bot (update version" in r.stdout and "+ users/alice (create)" in r.stdout
    assert call(gate, bot).status_code == 400, "a dry run changes nothing"
    r = cli(gate, "apply", "-f", str(d))
    assert r.returncode == 0, r.stderr
    assert call(gate, bot).status_code == 200
    r = cli(gate, "apply", "-f", str(d))
    assert "nothing to change" in r.stdout
    # A conflicting change between plan and apply is refused, nothing applied.
    (d / "users" / "alice.json").write_text(json.dumps({"groups": ["ops"]}))
    v = admin.version("users/alice")
    assert admin.put("users/alice", {"groups": ["x"]}, v).status_code == 200
    r = cli(gate, "admin", "apply", "users/alice", "-f", str(d / "users" / "alice.json"), "--if-match", str(v))
    assert r.returncode != 0 and "version_conflict" in r.stderr and f"current version: {v + 1}" in r.stderr


def test_apply_prune_deletes_what_the_directory_lacks(admin_gate, tmp_path):
    """`apply --prune` makes the API's state of each kind in the directory
    equal to its files: what the API holds beyond them is deleted in the same
    transaction; kinds without a folder, and the configuration file's
    resources, are left alone. Without `--prune` nothing is deleted."""
    gate, admin, agents = admin_gate()
    for user in ("alice", "mallory"):
        assert admin.put(f"users/{user}", {"groups": ["admins"]}, None).status_code in (200, 201)
    assert admin.put("policies/extra", {"text": "permit(principal, action, resource);\n"},
                     None).status_code in (200, 201)
    d = tmp_path / "state"
    (d / "users").mkdir(parents=True)
    (d / "users" / "alice.json").write_text(json.dumps({"groups": ["admins"]}))
    r = cli(gate, "admin", "diff", "-f", str(d))
    assert r.returncode == 0 and "mallory" not in r.stdout, r.stdout
    r = cli(gate, "admin", "diff", "-f", str(d), "--prune")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "  - users/mallory (delete version" in r.stdout and "policies" not in r.stdout, r.stdout
    r = cli(gate, "apply", "-f", str(d), "--prune")
    assert r.returncode == 0, r.stderr
    assert admin.get("users/mallory").status_code == 404
    assert admin.get("users/alice").status_code == 200
    assert admin.get("policies/extra").status_code == 200, "no policies folder: not pruned"
    assert admin.get("agents/support-bot").status_code == 200, "the configuration file's agent stays"
    r = cli(gate, "admin", "diff", "-f", str(d), "--prune")
    assert r.returncode == 0 and r.stdout.endswith("nothing to change\n"), r.stdout


def test_cli_diff_prints_the_plan_and_exits_2_on_changes(admin_gate, tmp_path):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    d = tmp_path / "state"
    (d / "agents").mkdir(parents=True)
    (d / "users").mkdir()
    (d / "agents" / "support-bot.json").write_text(json.dumps({"tools": ["crm__lookup_customer", TOOL]}))
    (d / "users" / "alice.json").write_text(json.dumps({"groups": ["admins"]}))
    r = cli(gate, "admin", "diff", "-f", str(d))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ("plan:\n  ~ agents/support-bot (replace the configuration file's)\n"
                        "  + users/alice (create)\n"), r.stdout
    dry = cli(gate, "apply", "-f", str(d), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith(r.stdout), "the same plan as `apply --dry-run`"
    assert call(gate, bot).status_code == 400, "diff changes nothing"
    assert admin.get("users/alice").status_code == 404
    assert cli(gate, "apply", "-f", str(d)).returncode == 0
    r = cli(gate, "admin", "diff", "-f", str(d))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "= agents/support-bot (version" in r.stdout and r.stdout.endswith("nothing to change\n")
    # A change made meanwhile through the API shows up again.
    v = admin.version("users/alice")
    assert admin.put("users/alice", {"groups": ["ops"]}, v).status_code == 200
    r = cli(gate, "admin", "diff", "-f", str(d))
    assert r.returncode == 2 and f"~ users/alice (update version {v + 1})" in r.stdout, r.stdout
    # Trouble is 1, never mistaken for "no change".
    r = cli(gate, "admin", "diff", "-f", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "is not a directory" in r.stderr, r.stderr
    env = {**os.environ, "TOOLGATE_ADMIN_TOKEN": "wrong"}
    r = subprocess.run([str(TOOLGATE_BIN), "admin", "diff", "-f", str(d), "--url", f"http://{HOST}:{gate.admin_port}"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 1 and "401 (unauthorized)" in r.stderr, r.stderr


def test_non_loopback_admin_listener_needs_tls(tmp_path):
    _, sha = new_api_key()
    cfg = tmp_path / "t.toml"
    tokens = f'[[admin.tokens]]\nname = "ops"\ntoken_sha256 = "{sha}"\n'
    cfg.write_text(f'[admin]\nlisten = "0.0.0.0:9091"\n{tokens}')
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "line 2: `admin.listen = \"0.0.0.0:9091\"` is not a loopback address: that needs `[admin.tls]`" in r.stderr
    # With TLS (and the token) it is allowed; a key that does not load is named.
    ca = make_ca()
    cert, key = server_cert(ca).write(tmp_path, "admin")
    tls = f'[admin.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    cfg.write_text(f'[admin]\nlisten = "0.0.0.0:9091"\n{tls}{tokens}')
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    cfg.write_text(f'[admin]\nlisten = "0.0.0.0:9091"\n{tls.replace(str(key), str(bad))}{tokens}')
    r = subprocess.run([str(TOOLGATE_BIN), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "[admin.tls]" in r.stderr and "bad.key" in r.stderr, r.stderr


def test_admin_api_over_tls_and_mtls(admin_gate, tmp_path):
    """`[admin.tls]` with client certificates: the CLI grants over https with
    `--ca-file` and a client certificate; plain HTTP, an unknown CA, or no
    client certificate fail clearly and change nothing."""
    ca = make_ca()
    cert, key = server_cert(ca).write(tmp_path, "admin")
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.cert.public_bytes(Encoding.PEM))
    ops_cert, ops_key = issue(ca, "ops", client=True).write(tmp_path, "ops")
    tls = (f'[admin.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
           f'client_ca_file = "{ca_pem}"\nmin_version = "1.3"\n')
    gate, admin, agents = admin_gate(admin_extra=tls)
    bot = agents["support-bot"]
    mtls = ["--ca-file", str(ca_pem), "--client-cert", str(ops_cert), "--client-key", str(ops_key)]
    r = cli(gate, "admin", "grant", "support-bot", TOOL, *mtls, scheme="https")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["shards"]["pending"] == []
    assert call(gate, bot).status_code == 200
    r = cli(gate, "admin", "get", "agents/support-bot", *mtls, scheme="https")
    assert r.returncode == 0 and TOOL in json.loads(r.stdout)["spec"]["tools"], r.stderr
    # Plain HTTP to the TLS port: a 400 that says to use https, no change.
    r = httpx.get(f"http://{HOST}:{gate.admin_port}/v1/agents",
                  headers={"Authorization": f"Bearer {gate.admin_token}"}, timeout=10.0)
    assert r.status_code == 400 and "use https://" in r.json()["error"], r.text
    r = cli(gate, "admin", "revoke", "support-bot", TOOL, *mtls)
    assert r.returncode != 0 and "400 (error): plain HTTP sent to toolgate's TLS listener: use https://" in r.stderr, r.stderr
    # A CA that did not issue the admin certificate: refused by the client.
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("other CA").cert.public_bytes(Encoding.PEM))
    r = cli(gate, "admin", "revoke", "support-bot", TOOL, "--ca-file", str(other), scheme="https")
    assert r.returncode != 0 and "UnknownIssuer" in r.stderr, r.stderr
    # The right CA, but no client certificate: the listener refuses the handshake.
    r = cli(gate, "admin", "revoke", "support-bot", TOOL, "--ca-file", str(ca_pem), scheme="https")
    assert r.returncode != 0 and "admin API at" in r.stderr, r.stderr
    assert call(gate, bot).status_code == 200, "nothing was revoked by the refused attempts"
    # A client certificate alone is not an admin credential: the token still is.
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    ctx.load_cert_chain(str(ops_cert), str(ops_key))
    with httpx.Client(verify=ctx, timeout=10.0) as h:
        r = h.get(f"https://{HOST}:{gate.admin_port}/v1/agents")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = h.get(f"https://{HOST}:{gate.admin_port}/v1/agents/support-bot",
                  headers={"Authorization": f"Bearer {gate.admin_token}"})
        assert r.status_code == 200 and r.headers["etag"] == f'"{r.json()["version"]}"'
    r = cli(gate, "admin", "revoke", "support-bot", TOOL, *mtls, scheme="https")
    assert r.returncode == 0, r.stderr
    assert call(gate, bot).status_code == 400


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


def err(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]


def test_bad_input_is_refused_and_changes_nothing(admin_gate):
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    audit_before = len(gate.read_audit())
    base = admin.base
    with httpx.Client(timeout=10.0) as anon:
        err(anon.get(f"{base}/agents"), 401, "unauthorized")
        err(anon.get(f"{base}/agents", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        err(anon.put(f"{base}/users/u", json={"groups": []}, headers={"If-None-Match": "*"}), 401, "unauthorized")
        # An agent's API key is not an admin credential.
        err(anon.get(f"{base}/agents", headers=bot.auth), 401, "unauthorized")
    h = admin.http
    err(h.put(f"{base}/users/u", json={"groups": []}), 428, "precondition_required")
    err(h.put(f"{base}/users/u", json={"groups": []}, headers={"If-Match": "yesterday"}), 400, "invalid_precondition")
    err(h.put(f"{base}/users/u", json={"groups": []}, headers={"If-Match": "*"}), 400, "invalid_precondition")
    err(h.put(f"{base}/users/u", content=b"{not json", headers={"If-None-Match": "*"}), 400, "invalid_document")
    e = err(admin.put("agents/support-bot", {"tools": [], "tool": [TOOL]}, 0), 400, "invalid_document")
    assert "unknown field `tool`" in e["message"]
    e = err(admin.put("agents/support-bot", {"tools": ["crm__no_such_tool"]}, 0), 422, "invalid_reference")
    assert "crm__no_such_tool" in e["message"]
    e = err(admin.put("agents/support-bot", {"tools": ["nowhere__x"]}, 0), 422, "invalid_reference")
    e = err(admin.put("agents/newbot", {"tools": []}), 422, "invalid_reference")
    assert "api_key_sha256" in e["message"]
    e = err(admin.put("policies/p", {"text": "permit(principal, action, resource"}), 422, "invalid_policy")
    assert "admin:policies/p.cedar" in e["message"]
    e = err(admin.put("policies/p", {"text": 'permit(principal, action == Toolgate::Action::"crm__nope", resource);'}),
            422, "invalid_policy")
    assert "crm__nope" in e["message"]
    err(admin.get("widgets/x"), 404, "unknown_kind")
    err(admin.get("agents/nobody"), 404, "not_found")
    err(admin.put("users/bad id!", {"groups": []}), 400, "invalid_request")
    err(admin.http.put(f"{base}/users", json={"groups": []}, headers={"If-None-Match": "*"}), 405, "method_not_allowed")
    err(admin.delete("agents/support-bot", 0), 409, "defined_in_config_file")
    big = {"groups": ["g" * 200] * 6000}
    err(admin.put("users/big", big), 413, "body_too_large")
    # A transaction with one bad operation applies nothing.
    tx = {"operations": [
        {"op": "put", "kind": "users", "id": "carol", "if_none_match": True, "spec": {"groups": ["a"]}},
        {"op": "put", "kind": "agents", "id": "support-bot", "if_match": 5, "spec": {"tools": [TOOL]}},
    ]}
    e = err(h.post(f"{base}/transaction", json=tx), 412, "version_conflict")
    assert e["operation"] == 1 and e["current_version"] == 0
    tx["operations"][1]["if_match"] = 0
    tx["operations"][1]["spec"] = {"tools": ["crm__no_such_tool"]}
    err(h.post(f"{base}/transaction", json=tx), 422, "invalid_reference")
    err(h.post(f"{base}/transaction", json={"operations": [{"op": "put", "kind": "users", "id": "d", "spec": {}}]}),
        428, "precondition_required")
    err(admin.get("users/carol"), 404, "not_found")
    assert call(gate, bot).status_code == 400
    assert admin.get("users").json() == {"items": []}
    # Nothing was changed; every refused write (and request without a valid
    # admin token) is an audit record of its own, denied, with the error code.
    time.sleep(0.3)
    refused = [r for r in gate.read_audit()[audit_before:] if "admin" in r]
    assert refused and all(r["decision"] == "deny" for r in refused)
    seen = {(r["admin"]["actor"], r["admin"]["op"], r["reason"], r["status"]) for r in refused}
    assert (None, "get", "unauthorized", 401) in seen
    assert ("ops", "put", "precondition_required", 428) in seen
    assert ("ops", "transaction", "version_conflict", 412) in seen
    assert ("ops", "put", "invalid_policy", 422) in seen
    assert not [r for r in refused if r["admin"]["op"] == "get" and r["status"] == 404], "failed reads are not audited"
    # And a good transaction applies all of its operations at once.
    tx["operations"][1]["spec"] = {"tools": [TOOL]}
    r = h.post(f"{base}/transaction", json=tx)
    assert r.status_code == 200, r.text
    assert [x["version"] for x in r.json()["results"]] == [r.json()["results"][0]["version"]] * 2
    assert call(gate, bot).status_code == 200


# --------------------------------------------------------------------------
# revoke propagation
# --------------------------------------------------------------------------


def test_revoke_propagation_p99(admin_gate):
    """Time from a revoke's PUT to every shard running the new generation,
    as the server measures it (`propagation_us`) and as the client sees the
    whole answer. Printed with -s; REVOKES sets the count (default 1000)."""
    n = int(os.environ.get("REVOKES", "1000"))
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]
    version = 0
    server_us, client_us = [], []
    with httpx.Client(timeout=10.0) as agent_http:
        for i in range(n):
            r = grant(admin, "support-bot", ["crm__lookup_customer", TOOL], version)
            assert r.status_code == 200, r.text
            version = int(r.headers["etag"].strip('"'))
            t0 = time.perf_counter()
            r = grant(admin, "support-bot", ["crm__lookup_customer"], version)
            client_us.append((time.perf_counter() - t0) * 1e6)
            assert r.status_code == 200, r.text
            assert r.json()["shards"]["pending"] == []
            server_us.append(r.json()["propagation_us"])
            version = int(r.headers["etag"].strip('"'))
            if i % 100 == 0:
                assert call(gate, bot, http=agent_http).status_code == 400

    def pct(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * p))]

    print(f"\nrevoke propagation over {n} revokes (2 shards): publish->all shards p50 {pct(server_us, .5):.0f} us, "
          f"p99 {pct(server_us, .99):.0f} us, max {max(server_us):.0f} us; whole PUT (validate, commit+fsync, "
          f"publish, audit, acks) p50 {pct(client_us, .5) / 1000:.2f} ms, p99 {pct(client_us, .99) / 1000:.2f} ms")
    assert pct(server_us, .99) < 50_000


SCOPE_POLICY = """@id("attached-tools")
permit(principal, action, resource) unless { action == Toolgate::Action::"crm__delete_record" };
@id("delete-admins-only")
permit(principal in Toolgate::Group::"support", action == Toolgate::Action::"crm__delete_record", resource)
when { context has user && context.user in Toolgate::Group::"admins" };
"""


def test_scope_a_granted_tool_to_a_group_in_one_transaction(admin_gate):
    """The example of docs/admin-api.md ("Grant, scope and revoke while an
    agent runs"): grant, scope to `admins` with a policy and a user,
    atomically; then revoke."""
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]

    def as_user(user: str, tool: str = TOOL) -> int:
        body = modern_request("tools/call", {"name": tool, "arguments": {"record_id": "R-1", "customer_id": "C-1"}})
        headers = {**modern_headers("tools/call", tool, bot.key), "Toolgate-On-Behalf-Of": user}
        return httpx.post(gate.url, json=body, headers=headers, timeout=10.0).status_code

    tx = {"operations": [
        {"op": "put", "kind": "agents", "id": "support-bot", "if_match": 0,
         "spec": {"tools": ["crm__lookup_customer", TOOL], "groups": ["support"], "act_for_users": True}},
        {"op": "put", "kind": "users", "id": "alice", "if_none_match": True, "spec": {"groups": ["admins"]}},
        {"op": "put", "kind": "policies", "id": "scope", "if_none_match": True, "spec": {"text": SCOPE_POLICY}},
    ]}
    r = admin.http.post(f"{admin.base}/transaction", json=tx)
    assert r.status_code == 200, r.text
    assert as_user("alice") == 200
    assert as_user("bob") == 403, "granted, but scoped to admins by policy"
    assert as_user("bob", "crm__lookup_customer") == 200
    v = admin.version("agents/support-bot")
    r = admin.put("agents/support-bot", {"tools": ["crm__lookup_customer"], "groups": ["support"], "act_for_users": True}, v)
    assert r.status_code == 200, r.text
    assert as_user("alice") == 400, "revoked: not attached any more"
    assert sorted(i["id"] for i in admin.get("policies").json()["items"]) == ["scope"]


def test_attachment_scoped_to_users_and_groups(admin_gate):
    """A tool attached for some end users only: listed users and members of
    listed groups may have it called for them; anyone else (or no user) is
    answered as for an unattached tool, and the audit record says why."""
    gate, admin, agents = admin_gate()
    bot = agents["support-bot"]

    def as_user(user: str | None) -> httpx.Response:
        body = modern_request("tools/call", {"name": TOOL, "arguments": {"record_id": "R-1"}})
        headers = modern_headers("tools/call", TOOL, bot.key)
        if user:
            headers["Toolgate-On-Behalf-Of"] = user
        return httpx.post(gate.url, json=body, headers=headers, timeout=10.0)

    spec = {"tools": ["crm__lookup_customer", TOOL], "act_for_users": True,
            "scopes": {TOOL: {"users": ["alice"], "groups": ["admins"]}}}
    e = err(admin.put("agents/support-bot", spec, 0), 422, "invalid_reference")
    assert "user `alice`" in e["message"]
    bad = {**spec, "scopes": {"crm__list_customers": {"users": ["alice"]}}}
    e = err(admin.put("agents/support-bot", bad, 0), 422, "invalid_document")
    assert "`tools` does not attach" in e["message"]
    tx = {"operations": [
        {"op": "put", "kind": "users", "id": "alice", "if_none_match": True, "spec": {"groups": []}},
        {"op": "put", "kind": "users", "id": "carol", "if_none_match": True, "spec": {"groups": ["admins"]}},
        {"op": "put", "kind": "agents", "id": "support-bot", "if_match": 0, "spec": spec},
    ]}
    r = admin.http.post(f"{admin.base}/transaction", json=tx)
    assert r.status_code == 200, r.text
    assert admin.get("agents/support-bot").json()["spec"]["scopes"] == spec["scopes"]
    before = gate.audit_len()
    assert as_user("alice").status_code == 200
    assert as_user("carol").status_code == 200, "a member of a listed group"
    out = as_user("bob")
    assert out.status_code == 400 and out.json()["error"]["message"].startswith("Unknown tool")
    assert as_user(None).status_code == 400, "a scoped tool needs an end user"
    recs = [r for r in gate.audit_after(before, 4) if r.get("tool") == TOOL]
    assert [(r["user"], r["decision"], r["reason"]) for r in recs] == [
        ("alice", "allow", "attached"), ("carol", "allow", "attached"),
        ("bob", "deny", "tool_out_of_scope"), (None, "deny", "tool_out_of_scope"),
    ]
    # tools/list shows the scoped tool only to callers in its scope.
    def listed(user: str | None) -> list[str]:
        headers = modern_headers("tools/list", None, bot.key)
        if user:
            headers["Toolgate-On-Behalf-Of"] = user
        r = httpx.post(gate.url, json=modern_request("tools/list", {}), headers=headers, timeout=10.0)
        assert r.status_code == 200, r.text
        return [t["name"] for t in r.json()["result"]["tools"]]

    assert listed("alice") == ["crm__lookup_customer", TOOL]
    assert listed("carol") == ["crm__lookup_customer", TOOL]
    assert listed("bob") == ["crm__lookup_customer"]
    assert listed(None) == ["crm__lookup_customer"]
    # Widening the scope at run time takes effect on the answer.
    v = admin.version("agents/support-bot")
    spec["scopes"][TOOL]["users"].append("bob")
    tx = {"operations": [
        {"op": "put", "kind": "users", "id": "bob", "if_none_match": True, "spec": {"groups": []}},
        {"op": "put", "kind": "agents", "id": "support-bot", "if_match": v, "spec": spec},
    ]}
    assert admin.http.post(f"{admin.base}/transaction", json=tx).status_code == 200
    assert as_user("bob").status_code == 200
    assert listed("bob") == ["crm__lookup_customer", TOOL]


# --------------------------------------------------------------------------
# sub-tokens through the admin API
# --------------------------------------------------------------------------

LOOKUP = "crm__lookup_customer"
SUBTOKENS = "[auth.subtokens]\nmax_ttl_s = 86400\n"


def lookup(gate, token: str) -> httpx.Response:
    body = modern_request("tools/call", {"name": LOOKUP, "arguments": {"customer_id": "C-1"}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", LOOKUP, token), timeout=10.0)


def test_subtoken_minted_listed_and_revoked_through_the_api(admin_gate):
    gate, admin, _ = admin_gate(agents=[Agent("support-bot", [LOOKUP, TOOL])], extra_toml=SUBTOKENS)
    h, base = admin.http, admin.base
    r = h.post(f"{base}/subtokens", json={"agent": "support-bot", "user": "alice", "tools": [LOOKUP], "ttl_s": 600})
    assert r.status_code == 200, r.text
    minted = r.json()
    token, jti = minted["token"], minted["id"]
    version = int(r.headers["etag"].strip('"'))
    assert token.startswith("tgs_") and minted["results"] == [{"kind": "subtokens", "id": jti, "version": version}]
    assert minted["shards"]["pending"] == [] and minted["expires_at"] > time.time() + 590

    # The SDK client calls with it, as with a token minted by `toolgate token mint`.
    async def sdk_call():
        async with sdk_client_cm(gate.url, token, "auto") as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            res = await client.call_tool(LOOKUP, {"customer_id": "C-1"})
            return listed, res

    listed, res = anyio.run(sdk_call)
    assert listed == [LOOKUP], "narrowed to its tool"
    assert not res.is_error
    before = gate.audit_len()
    assert lookup(gate, token).status_code == 200
    [rec] = gate.audit_after(before)
    assert (rec["agent"], rec["user"], rec["decision"]) == ("support-bot", "alice", "allow")

    # Listed and read with its claims and version, never the token.
    items = admin.get("subtokens").json()["items"]
    assert [(i["id"], i["version"], i["source"]) for i in items] == [(jti, version, "store")]
    assert items[0]["spec"] == {"agent": "support-bot", "user": "alice", "tools": [LOOKUP],
                                "iat": items[0]["spec"]["iat"], "exp": minted["expires_at"], "revoked": False}
    assert admin.version(f"subtokens/{jti}") == version
    assert token not in admin.get(f"subtokens/{jti}").text

    # A stale If-Match is refused with the current version; nothing changes.
    revoke = f"{base}/subtokens/{jti}/revoke"
    e = err(h.post(revoke, headers={"If-Match": f'"{version + 7}"'}), 412, "version_conflict")
    assert e["current_version"] == version
    err(h.post(revoke), 428, "precondition_required")
    err(h.post(revoke, headers={"If-None-Match": "*"}), 400, "invalid_precondition")
    assert lookup(gate, token).status_code == 200

    # Revoked: the API answers once every shard refuses it.
    r = h.post(revoke, headers={"If-Match": f'"{version}"'})
    assert r.status_code == 200, r.text
    assert r.json()["shards"] == {"total": 2, "pending": []}
    revoked_version = int(r.headers["etag"].strip('"'))
    assert revoked_version > version
    before = gate.audit_len()
    out = lookup(gate, token)
    body = assert_jsonrpc_error(out, 401, UNAUTHORIZED)
    assert "revoked" in body["error"]["message"], body
    [rec] = gate.audit_after(before)
    assert (rec["decision"], rec["reason"], rec["status"]) == ("deny", "token_revoked", 401), rec
    assert admin.get(f"subtokens/{jti}").json()["spec"]["revoked"] is True
    err(h.post(revoke, headers={"If-Match": f'"{revoked_version}"'}), 409, "already_revoked")
    err(h.post(revoke, headers={"If-Match": f'"{version}"'}), 412, "version_conflict")

    # Mint and revoke are audit records; the token is in no record and no log line.
    changes = [r["admin"] for r in gate.read_audit() if "admin" in r and r["decision"] == "allow"]
    assert [(c["op"], c["kind"], c["id"], c["old_version"], c["new_version"]) for c in changes] == [
        ("mint", "subtokens", jti, None, version), ("revoke", "subtokens", jti, version, revoked_version)]
    assert changes[0]["diff"]["agent"] == {"old": None, "new": "support-bot"}
    assert changes[1]["diff"] == {"revoked": {"old": False, "new": True}}
    assert token not in json.dumps(gate.read_audit()) and token not in gate.stderr_text()

    # The revocation survives a restart from the first request on.
    gate.stop()
    gate.start()
    wait_for_port(gate.admin_port, 30, gate.proc)
    assert_jsonrpc_error(lookup(gate, token), 401, UNAUTHORIZED)


def test_subtoken_revoke_while_sdk_client_calls(admin_gate):
    """No call started after the revoke's answer succeeds; the first refused
    call is a 401 audited `token_revoked`."""
    gate, admin, _ = admin_gate(agents=[Agent("support-bot", [LOOKUP])], extra_toml=SUBTOKENS)
    r = admin.http.post(f"{admin.base}/subtokens", json={"agent": "support-bot", "ttl_s": 600})
    assert r.status_code == 200, r.text
    token, jti, version = r.json()["token"], r.json()["id"], r.headers["etag"]
    calls: list[tuple[float, bool]] = []
    marks: dict[str, float] = {}
    stop = threading.Event()

    async def loop(client) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                await client.call_tool(LOOKUP, {"customer_id": "C-1"})
                calls.append((t0, True))
            except Exception:  # a 401 ends the SDK's request in an error
                calls.append((t0, False))
                await anyio.sleep(0.01)

    def control() -> None:
        deadline = time.monotonic() + 20
        while sum(1 for _, ok in list(calls) if ok) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = admin.http.post(f"{admin.base}/subtokens/{jti}/revoke", headers={"If-Match": version})
        marks["revoked"] = time.monotonic()
        assert r.status_code == 200, r.text
        while sum(1 for t, _ in list(calls) if t > marks["revoked"]) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)

    async def scenario() -> None:
        with anyio.fail_after(60):
            async with sdk_client_cm(gate.url, token, "auto") as client:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(loop, client)
                    try:
                        await anyio.to_thread.run_sync(control)
                    finally:
                        stop.set()

    anyio.run(scenario)
    before = [ok for t, ok in calls if t < marks["revoked"]]
    after = [ok for t, ok in calls if t > marks["revoked"]]
    assert before and all(before[:5]), "allowed before the revoke"
    assert after and not any(after), "no call started after the revoke's answer succeeds"
    revoked = [r for r in gate.read_audit() if r.get("reason") == "token_revoked"]
    assert revoked and all(r["status"] == 401 and r["agent"] is None for r in revoked)


def test_subtoken_bad_requests_and_the_cli(admin_gate):
    gate, admin, _ = admin_gate(agents=[Agent("support-bot", [LOOKUP])], extra_toml=SUBTOKENS)
    h, base = admin.http, admin.base
    e = err(h.post(f"{base}/subtokens", json={"agent": "support-bot", "tools": [TOOL]}), 422, "invalid_reference")
    assert "cannot widen" in e["message"]
    e = err(h.post(f"{base}/subtokens", json={"agent": "nobody"}), 422, "invalid_reference")
    assert "`nobody`" in e["message"]
    e = err(h.post(f"{base}/subtokens", json={"agent": "support-bot", "ttl_s": 86401}), 422, "invalid_document")
    assert "max_ttl_s" in e["message"]
    err(h.post(f"{base}/subtokens", json={"agent": "support-bot", "token": "x"}), 400, "invalid_document")
    err(h.post(f"{base}/subtokens", json={"agent": "support-bot", "user": "a b"}), 422, "invalid_document")
    err(h.post(f"{base}/subtokens/00ff/revoke", headers={"If-Match": '"1"'}), 404, "not_found")
    err(admin.put("subtokens/00ff", {"agent": "support-bot", "iat": 1, "exp": 2}), 405, "method_not_allowed")
    err(admin.delete("subtokens/00ff", 1), 405, "method_not_allowed")
    tx = {"operations": [{"op": "put", "kind": "subtokens", "id": "00ff", "if_none_match": True,
                          "spec": {"agent": "support-bot", "iat": 1, "exp": 2}}]}
    err(h.post(f"{base}/transaction", json=tx), 400, "invalid_request")
    assert admin.get("subtokens").json() == {"items": []}, "nothing was minted"
    # Refused requests are answered before their records reach the log.
    wanted = {("mint", "invalid_reference"), ("revoke", "not_found")}
    deadline = time.monotonic() + 10
    while True:
        refused = {(r["admin"]["op"], r["reason"]) for r in gate.read_audit() if "admin" in r}
        if wanted <= refused or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ("mint", "invalid_reference") in refused and ("revoke", "not_found") in refused
    # The CLI: mint (token on stdout, id on stderr), list, revoke.
    r = cli(gate, "admin", "token", "mint", "--agent", "support-bot", "--tool", LOOKUP, "--ttl", "10m")
    assert r.returncode == 0, r.stderr
    token, jti = r.stdout.strip(), r.stderr.split("id: ")[1].split()[0]
    assert lookup(gate, token).status_code == 200
    r = cli(gate, "admin", "token", "list")
    assert r.returncode == 0 and f"{jti}  active" in r.stdout and token not in r.stdout, r.stdout
    r = cli(gate, "admin", "token", "revoke", jti)
    assert r.returncode == 0, r.stderr
    assert lookup(gate, token).status_code == 401
    r = cli(gate, "admin", "token", "list")
    assert f"{jti}  revoked" in r.stdout, r.stdout
    r = cli(gate, "admin", "token", "revoke", jti)
    assert r.returncode != 0 and "already_revoked" in r.stderr, r.stderr


def test_subtoken_mint_without_subtokens_configured(admin_gate):
    gate, admin, _ = admin_gate()
    e = err(admin.http.post(f"{admin.base}/subtokens", json={"agent": "support-bot"}), 409, "subtokens_off")
    assert "[auth.subtokens]" in e["message"]
