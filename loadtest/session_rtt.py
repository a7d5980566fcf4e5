"""Shared sessions: what reading a session from Redis costs a call.

Sequential single-client calls on 127.0.0.1 (the client dominates the
absolute numbers; compare the rows): one toolgate with `sessions.backend =
"redis"`, one with local sessions, each for calls of one session and calls
that each start a new session (so each waits for its session to be read).
Needs release binaries and `redis-server`:

    cargo build --release -p toolgate -p toolgate-loadtest
    python3 loadtest/session_rtt.py   # with httpx installed
"""
import hashlib, os, socket, statistics, subprocess, tempfile, time, uuid
import httpx

HOST = "127.0.0.1"
def free():
    s = socket.socket(); s.bind((HOST, 0)); p = s.getsockname()[1]; s.close(); return p
def wait(port):
    for _ in range(200):
        try:
            socket.create_connection((HOST, port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")

root = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "target" / "release")
KEY = "tg_rtt_key"
up_port, redis_port = free(), free()
procs = []
os.chdir(tempfile.mkdtemp(prefix="toolgate-session-rtt-"))
procs.append(subprocess.Popen([f"{root}/toolgate-loadtest", "upstream", "--listen", f"{HOST}:{up_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
wait(up_port); wait(redis_port)
open("p.cedar", "w").write('@id("all") permit(principal, action, resource);\n@id("toxic") forbid(principal, action, resource) when { resource.labels.contains("external_send") && (context.session.labels.contains("reads_pii") || !context.session.known) };\n')
def gate(name, backend):
    port = free()
    sha = hashlib.sha256(KEY.encode()).hexdigest()
    cfg = f"""[server]
listen = "{HOST}:{port}"
shards = 1
[[upstreams]]
name = "fast"
url = "http://{HOST}:{up_port}/mcp"
[[agents]]
id = "load"
api_key_sha256 = "{sha}"
tools = ["fast__echo"]
[policies]
files = ["p.cedar"]
[audit]
dir = "audit-{name}"
[log]
level = "warn"
[limits]
backend = "{backend}"
"""
    if backend == "redis":
        cfg += f'[limits.redis]\nurl = "redis://{HOST}:{redis_port}/0"\n'
    cfg += f'[tool_labels]\n"fast__echo" = ["reads_pii"]\n[sessions]\nbackend = "{backend}"\n'
    open(f"{name}.toml", "w").write(cfg)
    procs.append(subprocess.Popen([f"{root}/toolgate", "run", "-c", f"{name}.toml"], stderr=open(f"{name}.log", "w")))
    wait(port)
    time.sleep(0.5)
    return f"http://{HOST}:{port}/mcp"

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
def run(url, fresh, n=400):
    out = []
    with httpx.Client() as c:
        conv = "same"
        for i in range(n + 50):
            if fresh:
                conv = str(uuid.uuid4())
            h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                 "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "fast__echo", "Toolgate-Conversation": conv}
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "fast__echo", "arguments": {"text": "x"}, "_meta": META}}
            t = time.perf_counter(); r = c.post(url, json=body, headers=h); dt = time.perf_counter() - t
            assert r.status_code == 200, r.text
            if i >= 50: out.append(dt * 1e6)
    return statistics.median(out)
try:
    redis_url = gate("redis", "redis")
    local_url = gate("local", "local")
    rows = {}
    for rnd in range(3):
        for name, url in (("local", local_url), ("redis", redis_url)):
            for fresh in (False, True):
                rows.setdefault((name, fresh), []).append(run(url, fresh))
    for (name, fresh), v in rows.items():
        print(f"{name:6} {'new session each call' if fresh else 'one session':24} median of medians {statistics.median(v):8.0f} us  rounds {[round(x) for x in v]}")
finally:
    for p in procs: p.terminate()
