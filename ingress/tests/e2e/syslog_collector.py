"""A real rsyslog as the audit sinks' collector.

``Rsyslog`` writes a configuration that listens on 127.0.0.1 only — UDP and
TCP (octet-counted framing is on by default in imtcp) on high ports — and
writes what each input receives to its own file, one line per message with
the fields rsyslog's RFC 5424 parser extracted. It runs in the foreground
(``rsyslogd -n -f CONF -i PIDFILE``) and is stopped by its pid.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from harness import HOST, free_port, stop_process, wait_for_port

SEP = " ||| "


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if Path(p).exists()), None
    )


@dataclass
class Received:
    """One message as rsyslog parsed it."""

    version: str
    app: str
    msgid: str
    sd: str
    record: dict[str, Any]


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for ``localhost``/127.0.0.1 and a client
    certificate (see certs.py), as PEM files in ``d``."""
    from certs import issue, make_ca, server_cert

    d.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    out["server_cert"], out["server_key"] = server_cert(ca, "localhost").write(d, "server")
    out["client_cert"], out["client_key"] = issue(ca, "toolgate", client=True).write(d, "client")
    return out


class Rsyslog:
    def __init__(self, workdir: Path, tls: dict[str, Path] | None = None) -> None:
        """With ``tls`` (from :func:`make_pki`), the TCP input speaks TLS
        (RFC 5425, GnuTLS driver) and requires a client certificate from the CA."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.udp_port = free_udp_port()
        self.tcp_port = free_port()
        self.udp_out = workdir / "udp.log"
        self.tcp_out = workdir / "tcp.log"
        self.conf = workdir / "rsyslog.conf"
        self.pidfile = workdir / "rsyslog.pid"
        self.stderr_path = workdir / "rsyslog.stderr"
        self.proc: subprocess.Popen | None = None
        work = workdir / "work"
        work.mkdir(exist_ok=True)
        fields = SEP.join(["%protocol-version%", "%app-name%", "%msgid%", "%structured-data%", "%msg%"])
        glob = f'workDirectory="{work}" maxMessageSize="64k"'
        imtcp = 'module(load="imtcp")'
        if tls is not None:
            glob += (f' defaultNetstreamDriverCAFile="{tls["ca"]}"'
                     f' defaultNetstreamDriverCertFile="{tls["server_cert"]}"'
                     f' defaultNetstreamDriverKeyFile="{tls["server_key"]}"')
            imtcp = ('module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"'
                     ' streamDriver.authMode="x509/certvalid")')
        self.conf.write_text(
            f'''global({glob})
module(load="imudp")
{imtcp}
template(name="tg" type="string" string="{fields}\\n")
ruleset(name="udp") {{ action(type="omfile" file="{self.udp_out}" template="tg") }}
ruleset(name="tcp") {{ action(type="omfile" file="{self.tcp_out}" template="tg") }}
input(type="imudp" address="{HOST}" port="{self.udp_port}" ruleset="udp")
input(type="imtcp" address="{HOST}" port="{self.tcp_port}" ruleset="tcp")
'''
        )

    @property
    def udp_address(self) -> str:
        return f"{HOST}:{self.udp_port}"

    @property
    def tcp_address(self) -> str:
        return f"{HOST}:{self.tcp_port}"

    def start(self) -> "Rsyslog":
        binary = rsyslogd_path()
        if binary is None:
            raise FileNotFoundError("rsyslogd not installed (scripts/test installs the Debian package `rsyslog`)")
        err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=err,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        err.close()
        wait_for_port(self.tcp_port, 15.0, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def received(self, which: str) -> list[Received]:
        path = self.udp_out if which == "udp" else self.tcp_out
        if not path.exists():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(SEP, 4)
            if len(parts) != 5:
                continue
            version, app, msgid, sd, msg = parts
            try:
                record = json.loads(msg.strip())
            except json.JSONDecodeError:
                record = {}
            out.append(Received(version, app, msgid, sd, record))
        return out

    def wait_for_seqs(self, which: str, want: set[int], timeout: float) -> list[Received]:
        """Polls until every ``log_seq`` in ``want`` arrived over ``which``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(which)
            seen = {r.record.get("log_seq") for r in got}
            if want <= seen or time.monotonic() >= deadline:
                return got
            time.sleep(0.05)
