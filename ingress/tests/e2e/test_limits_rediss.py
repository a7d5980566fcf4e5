"""Quotas shared through Redis over TLS (``rediss://``): a real
``redis-server`` speaking TLS only, its certificate issued by a test CA
that ``[limits.redis] ca_file`` names. The quota holds through it and its
count is in Redis; a gateway given another CA refuses the connection (the
certificate is verified, never trusted blindly) and says Redis is
unreachable.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from certs import make_ca, server_cert
from harness import HOST, HTTP_TIMEOUT_S, Agent, free_port, modern_headers, modern_request, stop_process, wait_for_port

TOOL = "crm__lookup_customer"
PASSWORD = "rediss-test-password"

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture
def tls_redis(tmp_path):
    ca = make_ca("redis test CA")
    cert, key = server_cert(ca, "localhost").write(tmp_path, "redis")
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    log = open(tmp_path / "redis.log", "ab")
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", HOST, "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca_path), "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    try:
        wait_for_port(port, 30, proc)
        yield port, ca_path
    finally:
        stop_process(proc)


def config(port: int) -> str:
    return f"""
[limits]
backend = "redis"

[limits.redis]
url = "rediss://localhost:{port}/0"
ca_file = "ca.pem"
password = {{ file = "redis.password" }}
lease = 3
replicas = 1
timeout_ms = 1000

[[limits.rules]]
id = "day"
customer = "*"
quota = {{ units = 3, per = "day" }}
"""


def call(gate, key: str) -> int:
    body = modern_request("tools/call", {"name": TOOL, "arguments": {"customer_id": "C-1"}})
    return httpx.post(gate.url, json=body, headers=modern_headers("tools/call", TOOL, key),
                      timeout=HTTP_TIMEOUT_S).status_code


def test_quotas_through_redis_over_tls_with_the_certificate_verified(make_gate, tls_redis):
    port, ca_path = tls_redis
    agent = Agent("acme-bot", [TOOL], customer="acme")
    gate = make_gate(agents=[agent], extra_toml=config(port), start=False)
    shutil.copy(ca_path, gate.workdir / "ca.pem")
    (gate.workdir / "redis.password").write_text(PASSWORD + "\n")
    gate.start()
    assert [call(gate, agent.key) for _ in range(4)] == [200, 200, 200, 429]
    key = f"toolgate:quota:day:{int(time.time()) // 86400}:acme"
    got = subprocess.run(["redis-cli", "--tls", "--cacert", str(ca_path), "-h", "localhost", "-p", str(port),
                          "--no-auth-warning", "-a", PASSWORD, "GET", key],
                         capture_output=True, text=True, timeout=10)
    assert got.returncode == 0 and int(got.stdout.strip() or 0) >= 3, (got.stdout, got.stderr)
    assert "Redis unreachable" not in gate.stderr_text()
    gate.stop()

    # Another CA: the server's certificate does not verify, nothing is sent.
    other = make_ca("another CA")
    (gate.workdir / "ca.pem").write_bytes(other.cert.public_bytes(serialization.Encoding.PEM))
    gate.start()
    call(gate, agent.key)
    deadline = time.monotonic() + 10
    while "Redis unreachable" not in gate.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Redis unreachable" in gate.stderr_text(), gate.stderr_text()
