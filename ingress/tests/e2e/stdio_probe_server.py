"""An MCP server on stdio that reports what its sandbox lets it do.

Usage: python stdio_probe_server.py

toolgate starts it as a ``kind = "stdio"`` upstream (inside bubblewrap) in
test_stdio.py; its tools probe the confinement from the inside and never
raise, so the agent sees what happened as the tool's text:

* ``connect(host, port)``  -- a TCP connection (2 s timeout): ``connected`` or ``refused: <error>``
* ``fetch(url, cafile)``     -- an HTTP(S) GET with urllib, which follows the
  ``*_PROXY`` variables (5 s timeout; TLS verified against ``cafile`` when
  given): ``<status>: <body>``, ``http <status>: <body>`` or ``error: <exception>``
* ``read_file(path)``      -- the file's text, or ``error: <exception>``
* ``getenv(name)``         -- the variable's value, or ``<unset>``
* ``limits()``             -- JSON: soft RLIMIT_AS/NPROC/NOFILE/CPU, ``NoNewPrivs`` and the uid
* ``allocate(mb)``         -- allocates and touches ``mb`` MiB; out of memory the
  process exits at once with status 70 (as a C or Node server aborts)
* ``sleep(seconds)``       -- answers ``slept`` after that long
* ``echo(text)``           -- ``text``
* ``grow(name)``           -- adds a tool ``name`` and sends ``notifications/tools/list_changed``

It writes ``stdio-probe started`` to stderr when it starts (the line must
reach toolgate's log).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import socket
import ssl
import sys
import urllib.error
import urllib.request

from mcp.server.mcpserver import Context, MCPServer

CHUNK_MB = 16

server = MCPServer("stdio-probe")


def _soft(limit: int) -> int | None:
    soft, _ = resource.getrlimit(limit)
    return None if soft == resource.RLIM_INFINITY else soft


# Drawn once per process: which process served a call.
INSTANCE = secrets.token_hex(8)


@server.tool()
def instance() -> str:
    """This process's random id."""
    return INSTANCE


@server.tool()
def connect(host: str, port: int) -> str:
    """Open a TCP connection to host:port (2 s timeout)."""
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return "connected"
    except Exception as e:  # noqa: BLE001 - the probe reports, never raises
        return f"refused: {type(e).__name__}: {e}"


@server.tool()
def fetch(url: str, cafile: str = "") -> str:
    """GET ``url`` (through the proxy the environment names, if any)."""
    context = ssl.create_default_context(cafile=cafile or None)
    try:
        with urllib.request.urlopen(url, timeout=5.0, context=context) as r:
            return f"{r.status}: {r.read(4096).decode(errors='replace')}"
    except urllib.error.HTTPError as e:
        return f"http {e.code}: {e.read(4096).decode(errors='replace')}"
    except Exception as e:  # noqa: BLE001
        return f"error: {type(e).__name__}: {e}"


@server.tool()
def read_file(path: str) -> str:
    """The text of a file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except Exception as e:  # noqa: BLE001
        return f"error: {type(e).__name__}: {e}"


@server.tool()
def getenv(name: str) -> str:
    """The value of an environment variable."""
    value = os.environ.get(name)
    return "<unset>" if value is None else value


@server.tool()
def limits() -> str:
    """Resource limits, no_new_privs and uid of this process, as JSON text."""
    no_new_privs = None
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("NoNewPrivs:"):
                    no_new_privs = int(line.split(":", 1)[1].strip())
    except OSError:
        pass
    return json.dumps({
        "RLIMIT_AS": _soft(resource.RLIMIT_AS),
        "RLIMIT_NPROC": _soft(resource.RLIMIT_NPROC),
        "RLIMIT_NOFILE": _soft(resource.RLIMIT_NOFILE),
        "RLIMIT_CPU": _soft(resource.RLIMIT_CPU),
        "NoNewPrivs": no_new_privs,
        "uid": os.getuid(),
    })


@server.tool()
def allocate(mb: int) -> str:
    """Allocate and touch ``mb`` MiB; out of memory, die like a native server."""
    held = []
    try:
        left = mb
        while left > 0:
            n = min(CHUNK_MB, left)
            block = bytearray(n * 1024 * 1024)
            for i in range(0, len(block), 4096):  # touch every page
                block[i] = 1
            held.append(block)
            left -= n
    except MemoryError:
        os._exit(70)
    del held
    return "allocated"


@server.tool()
async def sleep(seconds: float) -> str:
    """Answer after ``seconds``."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Adds a tool ``name`` (answering ``grown``) and announces that the tool list changed."""
    server.add_tool(lambda: "grown", name=name, description="Added at run time.")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@server.tool()
def echo(text: str) -> str:
    """Return ``text``."""
    return text


if __name__ == "__main__":
    print("stdio-probe started", file=sys.stderr, flush=True)
    server.run()
