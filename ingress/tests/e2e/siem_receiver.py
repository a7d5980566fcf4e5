"""A local SIEM collector for the HTTP audit sinks: Splunk HEC
(``/services/collector/event``), Elasticsearch ``_bulk`` and a plain NDJSON
webhook, on ``http.server`` in a thread, with a script of misbehaviour.

Each request is recorded (path, headers, body after gzip decoding). The
script is a list consumed one entry per request; when it is empty the
receiver behaves:

- ``("status", code, {header: value})``: answer ``code`` and store nothing;
- ``"close"``: read half of the body, then drop the connection unanswered;
- ``("items", [status, ...])`` (bulk only): per-item statuses; 201 and 409
  items are stored (a 409 means "indexed before"), others are not.

Bulk follows Elasticsearch: an ``_id`` stored already answers 409.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness import HOST


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0


@dataclass
class Receiver:
    port: int = 0
    script: list[Any] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    stored: list[dict[str, Any]] = field(default_factory=list)  # documents / events accepted
    ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tls: dict[str, Any] | None = None  # from syslog_collector.make_pki: serve HTTPS

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                receiver.handle(self)

        self.server = ThreadingHTTPServer((HOST, self.port), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls["server_cert"], self.tls["server_key"])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def answer(self, h: BaseHTTPRequestHandler, req: Request, status: int, body: Any,
               headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        req.status = status
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("Content-Length", "0"))
        with self.lock:
            action = self.script.pop(0) if self.script else None
        if action == "close":
            h.rfile.read(n // 2)
            h.close_connection = True
            with self.lock:
                self.requests.append(Request(h.path, dict(h.headers), b"", time.monotonic(), -1))
            return
        raw = h.rfile.read(n)
        body = gzip.decompress(raw) if h.headers.get("Content-Encoding") == "gzip" else raw
        req = Request(h.path, dict(h.headers), body, time.monotonic())
        with self.lock:
            self.requests.append(req)
            if isinstance(action, tuple) and action[0] == "status":
                self.answer(h, req, action[1], {"text": "Server is busy", "code": 9}, action[2])
                return
            if h.path.endswith("/_bulk"):
                self.bulk(h, req, action[1] if isinstance(action, tuple) else None)
            elif h.path.startswith("/services/collector"):
                events = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                self.stored += events
                self.answer(h, req, 200, {"text": "Success", "code": 0})
            else:
                self.stored += [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                self.answer(h, req, 202, {})

    def bulk(self, h: BaseHTTPRequestHandler, req: Request, statuses: list[int] | None) -> None:
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        items = []
        for i in range(0, len(lines), 2):
            action, doc = lines[i]["create"], lines[i + 1]
            want = statuses[i // 2] if statuses else None
            if want is None:
                want = 409 if action["_id"] in self.ids else 201
            if want in (201, 409) and action["_id"] not in self.ids:
                self.ids.add(action["_id"])
                self.stored.append(doc)
            item: dict[str, Any] = {"_index": action["_index"], "_id": action["_id"], "status": want}
            if want != 201:
                item["error"] = {"type": "version_conflict_engine_exception" if want == 409
                                 else "es_rejected_execution_exception"}
            items.append({"create": item})
        self.answer(h, req, 200, {"took": 1, "errors": any(i["create"]["status"] != 201 for i in items),
                                  "items": items})

    def wait_for(self, seqs: set[int], seq_of, timeout: float) -> list[int]:
        """Waits until every ``seqs`` is stored; returns the stored seqs."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = [seq_of(d) for d in self.stored]
            if seqs <= set(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.05)
