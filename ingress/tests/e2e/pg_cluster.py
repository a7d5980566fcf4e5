"""A throw-away PostgreSQL cluster for tests: the Debian package's binaries
(/usr/lib/postgresql/*/bin), initdb into a temp dir, the server in the
foreground on a free loopback port, run as the `postgres` system user when
the tests run as root (PostgreSQL refuses to run as root), stopped by the
pid this module started. Password (SCRAM) authentication over TCP, so the
gateway's `[admin.postgres_password]` is exercised for real.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harness import HOST, free_port


def pg_bin() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class PgCluster:
    def __init__(self, user: str = "toolgate", password: str = "s3cret-pw", db: str = "toolgate") -> None:
        bindir = pg_bin()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian package `postgresql`)")
        self.bin = bindir
        self.user, self.password, self.db = user, password, db
        self.port = free_port()
        # Not under pytest's tmp_path: the `postgres` user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="toolgate-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.sock.mkdir()
        self.log = self.dir / "postgres.log"
        self.as_root = os.geteuid() == 0
        self.run_as = pwd.getpwnam("postgres") if self.as_root else None
        if self.run_as is not None:
            for p in (self.dir, self.sock):
                os.chown(p, self.run_as.pw_uid, self.run_as.pw_gid)
        os.chmod(self.dir, 0o700)
        self.proc: subprocess.Popen | None = None

    def _user_kw(self) -> dict:
        if self.run_as is None:
            return {}
        return {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}

    def _env(self) -> dict:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        if self.run_as is not None:
            env["HOME"] = str(self.dir)
        return env

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=True, capture_output=True, text=True, env=self._env(),
                              cwd=self.dir, timeout=120, **self._user_kw(), **kw)

    def url(self) -> str:
        """The URL a gateway is given: no password in it."""
        return f"postgres://{self.user}@{HOST}:{self.port}/{self.db}"

    def start(self) -> "PgCluster":
        pwfile = self.dir / "superuser.pw"
        pwfile.write_text("super-" + self.password + "\n")
        if self.run_as is not None:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
        self.launch()
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.db} OWNER {self.user}")
        return self

    def launch(self) -> None:
        """Starts the server on the data directory initdb made (after `stop`)."""
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sock),
             "-c", f"listen_addresses={HOST}", "-c", "max_connections=50"],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=self._env(), cwd=self.dir,
            **self._user_kw())
        logf.close()
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run([str(self.bin / "pg_isready"), "-h", str(self.sock), "-p", str(self.port), "-q"],
                               env=self._env(), timeout=10)
            if r.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{self.log_text()}")
            time.sleep(0.1)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run([str(self.bin / "psql"), "-h", str(self.sock), "-p", str(self.port), "-U", "postgres",
                          "-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql]).stdout

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def halt(self) -> None:
        """Stops the server and keeps its data (``launch`` starts it again)."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: fast shutdown (active sessions are ended).
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stops the server and removes its data."""
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)
