"""Helpers shared by the toolgate end-to-end tests.

The harness starts real processes on 127.0.0.1 only:

* SDK upstream MCP servers (``upstream_server.py``), one answering
  ``application/json`` and one answering ``text/event-stream``;
* the ``toolgate`` binary itself (``toolgate run -c <config>``), described by
  a :class:`Gate` which writes the TOML config, waits for ``/readyz`` and
  reads the audit log;
* small in-process helper servers that misbehave on purpose
  (:class:`FlakyUpstream`, :class:`GarbageServer`).

Every wait in here is bounded: sockets, HTTP clients and process waits all
carry explicit timeouts so a broken toolgate fails a test instead of hanging
the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[2]
TOOLGATE_BIN = Path(os.environ.get("TOOLGATE_BIN", REPO_ROOT / "target" / "debug" / "toolgate"))
UPSTREAM_SCRIPT = E2E_DIR / "upstream_server.py"

HOST = "127.0.0.1"
MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSION = "2025-11-25"
CARD_NUMBER = "4111 1111 1111 1111"

READY_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 10.0
AUDIT_TIMEOUT_S = 5.0
# How long to keep watching the audit file after the expected lines arrived,
# to catch requests that were logged more than once.
AUDIT_SETTLE_S = 0.3

# JSON-RPC error codes used by toolgate.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHORIZED = -32001
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------


def _below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range. A port handed out from
    inside that range can be taken, between the moment it is chosen and the
    moment a server binds it, as the source port of any outgoing connection
    (or a client connecting to itself while it polls the port); a port
    below it is only ever taken by an explicit bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = max(low, 12000)
    return range(10000, low)


_PORTS = _below_ephemeral()
_next_port = [secrets.randbelow(len(_PORTS))]
_port_lock = threading.Lock()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 (TCP, or UDP with ``socket.SOCK_DGRAM``) that
    nothing is bound to right now, outside the ephemeral range and not
    handed out recently by this process."""
    with _port_lock:
        for _ in range(len(_PORTS)):
            port = _PORTS[_next_port[0] % len(_PORTS)]
            _next_port[0] += 1
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port in {_PORTS}")


def process_report(pid: int, port: int) -> str:
    """What a process that does not answer is doing: each thread's state and
    the kernel function it waits in, and which sockets use ``port``."""
    lines = [f"threads of {pid}:"]
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            base = f"/proc/{pid}/task/{tid}"
            try:
                comm = Path(f"{base}/comm").read_text().strip()
                state = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()[0]
                wchan = Path(f"{base}/wchan").read_text().strip()
            except OSError:
                continue
            lines.append(f"  {tid} {comm} {state} {wchan}")
    except OSError as e:
        lines.append(f"  unreadable: {e}")
    try:
        ss = subprocess.run(["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"], capture_output=True,
                            text=True, timeout=5)
        lines.append(f"sockets on port {port}:\n{ss.stdout}")
    except (OSError, subprocess.SubprocessError) as e:
        lines.append(f"ss failed: {e}")
    return "\n".join(lines)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout}s")


def scrape(port: int) -> dict[str, float]:
    """The Prometheus text at ``port``'s ``/metrics``: sample (name and
    labels) -> value."""
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5.0).text
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def rss_kib(pid: int) -> int:
    """The resident set of process ``pid``, KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def new_api_key() -> tuple[str, str]:
    """A fresh random API key and the SHA-256 hex digest stored in the config."""
    key = "tg_" + secrets.token_hex(24)
    return key, hashlib.sha256(key.encode()).hexdigest()


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate the process we started (by its pid), then kill it if needed."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string for our inputs
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")


# --------------------------------------------------------------------------
# SDK upstream servers
# --------------------------------------------------------------------------


def spawn_server(argv: list[str], log_path: Path, port: int,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts a test server (its output into ``log_path``, ``env`` laid over
    the environment) and waits until it listens on ``port``."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    wait_for_port(port, 20.0, proc)
    return proc


@dataclass
class UpstreamProc:
    """An SDK MCP server subprocess (see upstream_server.py)."""

    name: str
    encoding: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    # (certificate, key) PEM files: serve https instead of http.
    tls: tuple[Path, Path] | None = None
    # Extra environment for the server process (e.g. TOOL_DESCRIPTION_SUFFIX).
    env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self.port}/mcp"

    def start(self, log_dir: Path) -> "UpstreamProc":
        self.log_path = log_dir / f"upstream-{self.name}-{self.port}.log"
        self.proc = spawn_server(
            [sys.executable, str(UPSTREAM_SCRIPT), self.name, str(self.port), self.encoding]
            + ([str(self.tls[0]), str(self.tls[1])] if self.tls else []),
            self.log_path, self.port, self.env)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


# --------------------------------------------------------------------------
# toolgate process
# --------------------------------------------------------------------------


@dataclass
class Agent:
    id: str
    tools: list[str]
    key: str = ""
    key_sha256: str = ""
    # Names identifying the agent by TLS client certificate.
    cert_names: list[str] = field(default_factory=list)
    # No API key in the config (the agent proves itself another way).
    keyless: bool = False
    # The customer its calls are attributed to (default: its id).
    customer: str | None = None
    # May name its end user in `Toolgate-On-Behalf-Of`.
    act_for_users: bool = False
    # Attached prompts (exposed names) and resources (exposed URIs), globs.
    prompts: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.key:
            self.key, self.key_sha256 = new_api_key()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class UpstreamCfg:
    name: str
    url: str
    prefix: str | None = None
    timeout_ms: int | None = None
    # ``[upstreams.credential]`` keys (header, value_prefix, env/file/command).
    credential: dict[str, Any] | None = None
    # PEM CA bundle for an https upstream (relative to the config file).
    ca_file: str | None = None
    # Idle keep-alive connections kept per shard.
    pool_size: int | None = None
    # The upstream's era: "auto" (toolgate's default), "handshake", "stateless".
    protocol: str | None = None
    # Requests toward agents' clients it may have relayed (default: toolgate's).
    client_requests: list[str] | None = None


class Gate:
    """One ``toolgate run`` process with its own config, port and audit dir."""

    def __init__(
        self,
        workdir: Path,
        upstreams: Iterable[UpstreamCfg],
        agents: Iterable[Agent],
        server: dict[str, Any] | None = None,
        audit: dict[str, Any] | None = None,
        sinks: Iterable[dict[str, Any]] = (),
        extra_toml: str = "",
        tls_client: dict[str, Any] | None = None,
    ) -> None:
        # httpx keyword arguments (``verify``, ``cert``) for a TLS listener;
        # None for plain HTTP.
        self.tls_client = tls_client
        self.workdir = workdir
        self.audit_opts = dict(audit or {})
        self.sinks = list(sinks)
        self.extra_toml = extra_toml
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.upstreams = list(upstreams)
        self.agents = {a.id: a for a in agents}
        self.server_opts = {"shards": 2, **(server or {})}
        self.config_path = self.workdir / "toolgate.toml"
        self.audit_dir = self.workdir / "audit"
        self.stderr_path = self.workdir / "toolgate.stderr"
        self.proc: subprocess.Popen | None = None
        self.config_path.write_text(self.render_config())

    # ---- config -----------------------------------------------------------

    def render_config(self) -> str:
        lines = ["[server]", f"listen = {toml_value(f'{HOST}:{self.port}')}"]
        for k, v in self.server_opts.items():
            lines.append(f"{k} = {toml_value(v)}")
        for up in self.upstreams:
            lines += ["", "[[upstreams]]", f"name = {toml_value(up.name)}", f"url = {toml_value(up.url)}"]
            if up.prefix is not None:
                lines.append(f"prefix = {toml_value(up.prefix)}")
            if up.timeout_ms is not None:
                lines.append(f"timeout_ms = {up.timeout_ms}")
            if up.ca_file is not None:
                lines.append(f"ca_file = {toml_value(up.ca_file)}")
            if up.pool_size is not None:
                lines.append(f"pool_size = {up.pool_size}")
            if up.protocol is not None:
                lines.append(f"protocol = {toml_value(up.protocol)}")
            if up.client_requests is not None:
                lines.append(f"client_requests = {toml_value(up.client_requests)}")
            if up.credential is not None:
                lines.append("[upstreams.credential]")
                lines += [f"{k} = {toml_value(v)}" for k, v in up.credential.items() if not isinstance(v, dict)]
                for table, inner in ((k, v) for k, v in up.credential.items() if isinstance(v, dict)):
                    lines.append(f"[upstreams.credential.{table}]")
                    lines += [f"{k} = {toml_value(v)}" for k, v in inner.items()]
        for a in self.agents.values():
            lines += ["", "[[agents]]", f"id = {toml_value(a.id)}", f"tools = {toml_value(a.tools)}"]
            if not a.keyless:
                lines.append(f"api_key_sha256 = {toml_value(a.key_sha256)}")
            if a.cert_names:
                lines.append(f"client_cert_names = {toml_value(a.cert_names)}")
            if a.customer:
                lines.append(f"customer = {toml_value(a.customer)}")
            if a.act_for_users:
                lines.append("act_for_users = true")
            if a.prompts:
                lines.append(f"prompts = {toml_value(a.prompts)}")
            if a.resources:
                lines.append(f"resources = {toml_value(a.resources)}")
        lines += ["", "[audit]", 'dir = "audit"']
        for k, v in self.audit_opts.items():
            lines.append(f"{k} = {toml_value(v)}")
        for sink in self.sinks:
            lines += ["", "[[audit.sinks]]"] + [f"{k} = {toml_value(v)}" for k, v in sink.items()]
        lines.append("")
        if self.extra_toml:
            lines += [self.extra_toml.strip(), ""]
        return "\n".join(lines)

    # ---- lifecycle --------------------------------------------------------

    @property
    def base(self) -> str:
        scheme = "https" if self.tls_client is not None else "http"
        return f"{scheme}://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def spawn(self) -> "Gate":
        """Start ``toolgate run -c <config>`` without waiting for readiness.

        The working directory is deliberately not the config's directory, so
        the audit dir must be resolved relative to the config file."""
        if not TOOLGATE_BIN.exists():
            raise FileNotFoundError(f"toolgate binary not found at {TOOLGATE_BIN} (build it or set TOOLGATE_BIN)")
        elsewhere = self.workdir / "cwd"
        elsewhere.mkdir(exist_ok=True)
        err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(TOOLGATE_BIN), "run", "-c", str(self.config_path)],
            stdout=err,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=elsewhere,
        )
        err.close()
        return self

    def start(self, ready_timeout: float = READY_TIMEOUT_S) -> "Gate":
        self.spawn()
        self.wait_ready(ready_timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, **(self.tls_client or {})) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"toolgate exited with {self.proc.returncode}:\n{self.stderr_text()}")
                try:
                    if http.get(f"{self.base}/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"/healthz not 200 after {timeout}s:\n{self.stderr_text()}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(timeout=1.0, **(self.tls_client or {})) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"toolgate exited with {self.proc.returncode} during startup:\n{self.stderr_text()}"
                    )
                try:
                    r = http.get(f"{self.base}/readyz")
                    last = f"/readyz -> {r.status_code}"
                    if r.status_code == 200:
                        return
                except httpx.HTTPError as e:
                    last = f"/readyz -> {type(e).__name__}"
                time.sleep(0.05)
        raise TimeoutError(
            f"toolgate not ready after {timeout}s ({last}):\n{self.stderr_text()}\n{process_report(self.proc.pid, self.port)}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def stderr_text(self) -> str:
        if self.stderr_path.exists():
            return self.stderr_path.read_text(errors="replace")
        return ""

    # ---- audit ------------------------------------------------------------

    def read_audit(self) -> list[dict[str, Any]]:
        """Complete records currently in the audit log, every segment in order
        (a line still being written is ignored)."""
        return read_audit_dir(self.audit_dir)

    def audit_lines(
        self,
        count: int,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = AUDIT_TIMEOUT_S,
        exact: bool = True,
    ) -> list[dict[str, Any]]:
        """Poll the audit file until ``count`` lines (matching ``where``) are present.

        With ``exact`` the lines are watched a little longer and the count must
        not grow beyond ``count`` (each request is logged exactly once).
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.read_audit() if where is None or where(l)]
            if len(lines) >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        assert len(lines) >= count, (
            f"expected {count} audit lines, found {len(lines)} after {timeout}s: {json.dumps(lines, indent=1)}"
        )
        if exact:
            time.sleep(AUDIT_SETTLE_S)
            lines = [l for l in self.read_audit() if where is None or where(l)]
            assert len(lines) == count, f"expected exactly {count} audit lines, found {len(lines)}: {lines}"
        return lines

    def audit_after(self, before: int, count: int = 1, timeout: float = AUDIT_TIMEOUT_S) -> list[dict[str, Any]]:
        """The ``count`` lines appended after the first ``before`` lines (exactly that many)."""
        lines = self.audit_lines(before + count, timeout=timeout)
        return lines[before:]

    def audit_len(self) -> int:
        """Number of audit lines once the file has stopped growing (lines of
        earlier requests may still be on their way to the file)."""
        deadline = time.monotonic() + AUDIT_TIMEOUT_S
        count = len(self.read_audit())
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = len(self.read_audit())
            if now != count:
                count, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= AUDIT_SETTLE_S:
                break
        return count


def audit_segments(audit_dir: Path) -> list[Path]:
    """The log's segment files in log order (their names sort that way)."""
    if not audit_dir.is_dir():
        return []
    return sorted(audit_dir.glob("audit-" + "[0-9]" * 20 + ".jsonl"))


def read_audit_dir(audit_dir: Path) -> list[dict[str, Any]]:
    """Complete records of every segment of the log in ``audit_dir``, in order."""
    out: list[dict[str, Any]] = []
    for seg in audit_segments(audit_dir):
        try:
            data = seg.read_bytes()
        except FileNotFoundError:
            continue
        chunks = data.split(b"\n")
        chunks.pop()  # empty after the final newline, or a line still being written
        out.extend(json.loads(raw) for raw in chunks if raw.strip())
    return out


# --------------------------------------------------------------------------
# JSON-RPC / HTTP helpers for hand-made requests
# --------------------------------------------------------------------------


def modern_meta() -> dict[str, Any]:
    """The per-request ``_meta`` envelope of the stateless 2026-07-28 era."""
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "toolgate-e2e", "version": "1.0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }


def modern_request(method: str, params: dict[str, Any] | None = None, id: Any = 1) -> dict[str, Any]:
    p = dict(params or {})
    p["_meta"] = modern_meta()
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": p}


def modern_headers(method: str, name: str | None = None, key: str | None = None) -> dict[str, str]:
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN_VERSION,
        "Mcp-Method": method,
    }
    if name is not None:
        h["Mcp-Name"] = name
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    return h


def legacy_headers(key: str | None = None, session: str | None = None, version: str | None = None) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if session is not None:
        h["Mcp-Session-Id"] = session
    if version is not None:
        h["MCP-Protocol-Version"] = version
    return h


def initialize_request(id: Any = 1, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "toolgate-e2e", "version": "1.0"},
        },
    }


def open_session(port: int, key: str, capabilities: dict[str, Any] | None = None) -> str:
    """A handshake-era session of the agent with API key ``key``, opened
    over raw HTTP (``initialize`` with the client's ``capabilities``, then
    ``notifications/initialized``)."""
    with RawConn(port) as c:
        c.send(http_request("POST", "/mcp", port, json.dumps(initialize_request(capabilities=capabilities)).encode(),
                            legacy_headers(key)))
        resp = c.read_response()
        assert resp.status == 200, resp.body
        session = resp.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        c.send(http_request("POST", "/mcp", port, json.dumps(note).encode(), legacy_headers(key, session)))
        assert c.read_response().status == 202
    return session


def parse_body(response: httpx.Response) -> dict[str, Any]:
    """The single JSON-RPC message in a response (JSON or one-event SSE)."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:])
        raise AssertionError(f"no data event in SSE body: {response.text!r}")
    return response.json()


def assert_jsonrpc_error(
    response: httpx.Response, status: int, code: int | None, id: Any = ..., message_prefix: str | None = None
) -> dict[str, Any]:
    """Assert ``response`` is an HTTP ``status`` carrying a JSON-RPC error with ``code``."""
    desc = f"{response.request.method} {response.request.url} -> {response.status_code} {response.text[:500]!r}"
    assert response.status_code == status, f"expected HTTP {status}: {desc}"
    assert response.headers.get("content-type", "").startswith("application/json"), f"not JSON: {desc}"
    body = response.json()
    assert body.get("jsonrpc") == "2.0", desc
    assert isinstance(body.get("error"), dict), desc
    assert isinstance(body["error"].get("code"), int), desc
    assert isinstance(body["error"].get("message"), str), desc
    if code is not None:
        assert body["error"]["code"] == code, f"expected JSON-RPC code {code}: {desc}"
    if id is not ...:
        assert body.get("id") == id, f"expected id {id!r}: {desc}"
    if message_prefix is not None:
        assert body["error"]["message"].startswith(message_prefix), desc
    return body


def check_audit_line_shape(line: dict[str, Any]) -> None:
    """Field presence and types every audit line must have."""
    for key in (
        "time", "shard", "seq", "request_id", "agent", "user", "method", "tool", "upstream",
        "decision", "reason", "status", "outcome", "error_code", "latency_us",
    ):
        assert key in line, f"audit line lacks {key!r}: {line}"
    assert isinstance(line["time"], str) and RFC3339_RE.match(line["time"]), line
    assert isinstance(line["shard"], int) and line["shard"] >= 0, line
    assert isinstance(line["seq"], int) and line["seq"] >= 0, line
    assert line["agent"] is None or isinstance(line["agent"], str), line
    assert line["user"] is None, line
    assert line["decision"] in ("allow", "deny"), line
    assert isinstance(line["reason"], str) and re.fullmatch(r"[a-z0-9_]+", line["reason"]), line
    assert isinstance(line["status"], int), line
    assert line["outcome"] in ("success", "failure", "tool_error"), line
    assert line["error_code"] is None or isinstance(line["error_code"], int), line
    assert isinstance(line["latency_us"], int) and line["latency_us"] >= 0, line


# --------------------------------------------------------------------------
# raw sockets
# --------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConn:
    """A plain TCP connection speaking hand-written HTTP/1.1, with a read buffer
    so several responses can be read back from one stream (pipelining)."""

    def __init__(self, port: int, timeout: float = HTTP_TIMEOUT_S) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    @classmethod
    def wrap(cls, sock: socket.socket, timeout: float = HTTP_TIMEOUT_S) -> "RawConn":
        """A RawConn over a socket already connected."""
        conn = cls.__new__(cls)
        conn.sock = sock
        sock.settimeout(timeout)
        conn.buf = b""
        conn.eof = False
        return conn

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._fill():
                raise ConnectionError(f"connection closed while waiting for {sep!r}; got {self.buf[:200]!r}")
        head, _, self.buf = self.buf.partition(sep)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"connection closed after {len(self.buf)} of {n} body bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_request: bool = False) -> RawResponse:
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        assert parts[0].startswith("HTTP/1."), f"bad status line {status_line!r}"
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        for h in header_lines:
            k, _, v = h.partition(":")
            headers[k.strip().lower()] = v.strip()
        if 100 <= status < 200 or status in (204, 304) or head_request:
            return RawResponse(status, reason, headers, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._read_until(b"\r\n"):  # trailers
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return RawResponse(status, reason, headers, body)

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True if the peer closes the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def http_request(
    method: str,
    path: str,
    port: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """Serialize one HTTP/1.1 request (with Content-Length when there is a body)."""
    h = {"Host": f"{HOST}:{port}"}
    if body or method in ("POST", "PUT"):
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode("latin-1") + body


# --------------------------------------------------------------------------
# misbehaving upstreams
# --------------------------------------------------------------------------


class _TCPServer:
    """Accept loop on a thread; each connection is handled on its own thread."""

    def __init__(self) -> None:
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            conn.settimeout(30)
            with self.lock:
                self.conns.add(conn)
            threading.Thread(target=self._run_conn, args=(conn,), daemon=True).start()

    def _run_conn(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def handle(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def drop_connections(self) -> None:
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Stop listening (new connections are refused) and drop open ones."""
        self.closed = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        self.drop_connections()


def _read_http_request(conn: socket.socket, buf: bytes) -> tuple[str, str, dict[str, str], bytes, bytes] | None:
    """Read one HTTP request from ``conn``; returns (method, target, headers, body, rest) or None on EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for l in lines:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            if size == 0:
                # skip trailers (we assume none beyond the final CRLF)
                buf = buf[2:] if buf.startswith(b"\r\n") else buf.partition(b"\r\n\r\n")[2]
                break
            body += buf[:size]
            buf = buf[size + 2 :]
    else:
        n = int(headers.get("content-length", "0") or 0)
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        body, buf = buf[:n], buf[n:]
    return method, target, headers, body, buf


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "upgrade"}


class FlakyUpstream(_TCPServer):
    """An HTTP proxy in front of a real SDK upstream whose behaviour can be switched.

    Modes:
      ``forward``   relay each request to the real upstream (GET answers 405);
      ``garbage``   answer any request with bytes that are not HTTP, then close;
      ``not_json``  answer ``200 OK`` with a ``text/plain`` body that is not JSON;
      ``bad_json``  answer ``200 OK`` ``application/json`` with a body that does not parse;
      ``not_rpc``   answer ``200 OK`` ``application/json`` with JSON that is not JSON-RPC;
      ``wrong_id``  answer a well-formed JSON-RPC result for another request id;
      ``cut_after_id``  answer a reply whose ``id`` is right but whose body is cut
                    short inside the result (the id matches, the JSON does not parse);
      ``id_last``   relay to the real upstream and answer its reply as JSON with the
                    ``id`` member moved after ``result`` (valid JSON-RPC).
      ``huge_length``   claim a 10 GB ``Content-Length``, send a little, then close;
      ``reset_mid_body``  send headers and half a JSON-RPC body, then reset the
                    connection (RST, ``SO_LINGER`` 0);
      ``stall_body``    send headers and half a body, then send nothing more (the
                    connection stays open for 60 s);
      ``bad_sse``   answer ``text/event-stream`` whose frames carry no JSON-RPC message
                    (an unterminated ``data:`` line of garbage), then close.
    ``go_down()`` closes the listener, so further connections are refused.

    Switching drops open connections so pooled keep-alive connections of the
    client cannot keep talking to the previous mode.
    """

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.mode = "forward"
        self.requests: list[tuple[str, str, bytes]] = []
        self.client = httpx.Client(timeout=30.0)
        super().__init__()

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "garbage", "not_json", "bad_json", "not_rpc",
                        "wrong_id", "cut_after_id", "id_last", "huge_length", "reset_mid_body",
                        "stall_body", "bad_sse"), mode
        self.mode = mode
        self.drop_connections()

    def go_down(self) -> None:
        self.close()

    def handle(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            req = _read_http_request(conn, buf)
            if req is None:
                return
            method, target, headers, body, buf = req
            self.requests.append((self.mode, method, body))
            mode = self.mode
            if mode == "garbage":
                conn.sendall(b"garbage\r\n\r\n")
                return
            if mode in ("not_json", "bad_json", "not_rpc"):
                payload, ctype = {
                    "not_json": (b"this is not json at all", "text/plain"),
                    "bad_json": (b'{"jsonrpc": "2.0", "id": ', "application/json"),
                    "not_rpc": (b'{"hello": "world"}', "application/json"),
                }[mode]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\nContent-Length: "
                    + str(len(payload)).encode() + b"\r\nConnection: close\r\n\r\n" + payload
                )
                return
            if mode in ("wrong_id", "cut_after_id") and method == "POST":
                rid = json.loads(body).get("id", 0)
                payload = {
                    "wrong_id": json.dumps({"jsonrpc": "2.0", "id": rid + 1,
                                            "result": {"content": [], "isError": False}}).encode(),
                    "cut_after_id": b'{"jsonrpc":"2.0","id":' + str(rid).encode()
                                    + b',"result":{"content":[{"type":"text","text":"cut',
                }[mode]
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(payload)).encode() + b"\r\nConnection: close\r\n\r\n" + payload
                )
                return
            if mode in ("huge_length", "reset_mid_body", "stall_body") and method == "POST":
                rid = json.loads(body).get("id", 0)
                half = b'{"jsonrpc":"2.0","id":' + str(rid).encode() + b',"result":{"content":[{"type":"te'
                length = 10 * 1000 ** 3 if mode == "huge_length" else len(half) * 2
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(length).encode() + b"\r\n\r\n" + half)
                if mode == "reset_mid_body":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif mode == "stall_body":
                    deadline = time.monotonic() + 60
                    while not self.closed and time.monotonic() < deadline:
                        time.sleep(0.1)
                return
            if mode == "bad_sse" and method == "POST":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             b"1e\r\nevent: message\ndata: {\"jsonrpc\r\n0\r\n\r\n")
                return
            if method == "GET":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST, DELETE\r\nContent-Length: 0\r\n\r\n")
                continue
            fwd_headers = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
            r = self.client.request(method, self.target_url, content=body, headers=fwd_headers)
            if mode == "id_last" and method == "POST" and self._send_id_last(conn, r):
                continue
            out = f"HTTP/1.1 {r.status_code} {r.reason_phrase}\r\n"
            for k, v in r.headers.multi_items():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding":
                    out += f"{k}: {v}\r\n"
            out += f"Content-Length: {len(r.content)}\r\n\r\n"
            conn.sendall(out.encode("latin-1") + r.content)

    @staticmethod
    def _send_id_last(conn: socket.socket, r: httpx.Response) -> bool:
        """Sends ``r``'s JSON-RPC reply as JSON with ``id`` last; False when
        ``r`` carries no reply (a 202 to a notification), to relay it as is."""
        text = r.text
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            text = next((l[5:].strip() for l in text.splitlines() if l.startswith("data:")), "")
        try:
            reply = json.loads(text)
        except ValueError:
            return False
        if not isinstance(reply, dict) or "id" not in reply:
            return False
        rid = reply.pop("id")
        payload = (json.dumps(reply)[:-1] + f', "id": {json.dumps(rid)}}}').encode()
        out = f"HTTP/1.1 {r.status_code} OK\r\nContent-Type: application/json\r\n"
        if r.headers.get("mcp-session-id"):
            out += f"Mcp-Session-Id: {r.headers['mcp-session-id']}\r\n"
        out += f"Content-Length: {len(payload)}\r\n\r\n"
        conn.sendall(out.encode("latin-1") + payload)
        return True

    def close(self) -> None:
        super().close()
        self.client.close()


class BlackHoleServer(_TCPServer):
    """Accepts connections and reads requests but never answers."""

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        while not self.closed and conn.recv(65536):
            pass


class GarbageServer(_TCPServer):
    """Answers every connection with ``garbage\\r\\n\\r\\n`` and closes it."""

    def handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            conn.recv(65536)
        except OSError:
            pass
        conn.sendall(b"garbage\r\n\r\n")


# --------------------------------------------------------------------------
# MCP SDK client
# --------------------------------------------------------------------------

SDK_MODES = ("legacy", MODERN_VERSION, "auto")


def sdk_client_cm(url: str, api_key: str | None, mode: str, verify: Any = None,
                  headers: dict[str, str] | None = None, **client_options: Any):
    """An async context manager yielding a connected ``mcp.Client`` that sends
    ``Authorization: Bearer <api_key>`` (and any extra ``headers``, e.g.
    ``Toolgate-On-Behalf-Of``) on every HTTP request; ``verify`` (an
    ``ssl.SSLContext``) for an https URL; ``client_options`` go to the
    ``Client`` (e.g. ``elicitation_callback``)."""
    from contextlib import asynccontextmanager

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    @asynccontextmanager
    async def cm():
        sent = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
        sent.update(headers or {})
        timeout = httpx2.Timeout(HTTP_TIMEOUT_S, read=30.0)
        if verify is None:
            http = create_mcp_http_client(headers=sent or None, timeout=timeout)
        else:
            http = httpx2.AsyncClient(headers=sent or None, timeout=timeout, verify=verify)
        async with http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode=mode, read_timeout_seconds=20.0, **client_options) as client:
                yield client

    return cm()


def result_json(result: Any) -> Any:
    """The JSON object a tool returned (structured content, or its text block)."""
    if getattr(result, "structured_content", None):
        sc = result.structured_content
        return sc.get("result", sc) if isinstance(sc, dict) and set(sc) == {"result"} else sc
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    assert texts, f"no text content in {result!r}"
    try:
        return json.loads(texts[0])
    except json.JSONDecodeError:
        return texts[0]


class Demo:
    """``toolgate demo`` started on a free port (by its pid, stopped by it):
    ``url`` is its base URL, ``output`` what it printed."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.out_path = workdir / "demo.out"
        out = open(self.out_path, "wb")
        self.proc = subprocess.Popen([str(TOOLGATE_BIN), "demo", "--port", str(self.port)], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, cwd=workdir)
        out.close()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def __enter__(self) -> "Demo":
        with httpx.Client(timeout=1.0) as http:
            for _ in range(int(READY_TIMEOUT_S / 0.05)):
                assert self.proc.poll() is None, self.output()
                try:
                    if http.get(f"{self.url}/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        stop_process(self.proc)
        raise AssertionError(f"the demo did not become ready:\n{self.output()}")

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)
