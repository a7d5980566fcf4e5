"""Upstream MCP servers that toolgate aggregates in the end-to-end tests.

Usage: python upstream_server.py NAME PORT json|sse [CERT.pem KEY.pem]

* ``crm``      -- customer records (lookup_customer, list_customers, delete_record)
* ``tickets``  -- a ticket tracker (create_ticket, close_ticket, annotate,
  reject, slow), and long calls: steps (progress), wait_for_cancel and
  cancelled_tags (cancellation), ask_user (an elicitation during the call)
* ``ops``      -- operations (send_email, refund), for the policy tests
* ``docs``     -- resources (a public readme with a card number and an
  e-mail address, a draft, a secret key), a resource template, prompts
  (``summarize``, ``internal``) and one tool (``search``)
* ``vault``    -- ``whoami`` echoes the request's ``Authorization`` header,
  ``headers`` every header it received

``json`` makes the server answer POSTs with ``application/json`` bodies,
``sse`` with ``text/event-stream`` bodies, so toolgate's upstream client is
exercised with both response encodings of the streamable HTTP transport.
"""

from __future__ import annotations

import os
import sys
import time

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError

CARD_NUMBER = "4111 1111 1111 1111"

# Tags of ``wait_for_cancel`` calls that were cancelled (the tickets server).
CANCELLED_TAGS: list[str] = []

# An embedded private key (a made-up block: only its shape matters).
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n"
    "-----END RSA PRIVATE KEY-----"
)

# Customer records for output rules: e-mails, Luhn-valid card numbers,
# Luhn-invalid order numbers that look like cards, government ids (valid, and
# look-alikes in ranges never issued), nested arrays, an internal record and
# one whose notes embed a private key.
CUSTOMERS = [
    {
        "id": "C-1",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "card": CARD_NUMBER,
        "ssn": "078-05-1120",
        "tier": "gold",
        "notes": "verified SSN 536-22-1234 and NINO AB 12 34 56 C; form refs 666-12-3456 and QQ123456C",
        "orders": [
            {"order_no": "4111 1111 1111 1112", "items": [["widget", 2], ["gadget", 1]]},
            {"order_no": "5555-5555-5555-4445", "items": []},
        ],
    },
    {
        "id": "C-2",
        "name": "Bob Internal",
        "email": "bob@example.org",
        "card": "5555-5555-5555-4444",
        "ssn": "219-09-9999",
        "tier": "internal",
        "orders": [],
    },
    {
        "id": "C-3",
        "name": "Eve Ops",
        "email": "eve@example.net",
        "card": "4000 0000 0000 0002",
        "ssn": "123-45-6789",
        "tier": "silver",
        "notes": "deploy key follows " + PRIVATE_KEY,
        "orders": [{"order_no": "4000 0000 0000 0003", "items": [["key", 1]]}],
    },
]


def build_crm() -> MCPServer:
    server = MCPServer("crm")

    @server.tool()
    def lookup_customer(customer_id: str) -> dict:
        """Look up a customer record by id."""
        return {
            "id": customer_id,
            "name": f"Customer {customer_id}",
            "email": f"{customer_id}@example.com",
            "card": CARD_NUMBER,
        }

    @server.tool()
    def list_customers() -> dict:
        """List every customer record."""
        return {"customers": CUSTOMERS, "count": len(CUSTOMERS)}

    @server.tool()
    def delete_record(record_id: str) -> str:
        """Delete a customer record."""
        return f"deleted {record_id}"

    return server


def build_tickets() -> MCPServer:
    server = MCPServer("tickets")

    @server.tool()
    def create_ticket(title: str, priority: int) -> dict:
        """Open a ticket."""
        return {"ticket_id": f"T-{priority}-{len(title)}", "title": title, "priority": priority, "status": "open"}

    @server.tool()
    def close_ticket(ticket_id: str) -> str:
        """Close a ticket."""
        return f"closed {ticket_id}"

    @server.tool()
    async def annotate(text: str, ctx: Context) -> dict:
        """Echo the text, after a progress event quoting it (sent whether or
        not the caller asked for progress, so the SSE stream always holds an
        event besides the result)."""
        await ctx.request_context.session.send_progress_notification(
            "annotate", 1, 2, f"half way through {text}", related_request_id=ctx.request_id)
        return {"text": text, "words": len(text.split())}

    @server.tool()
    def reject(text: str) -> str:
        """Fail with a JSON-RPC error whose message and data quote the text."""
        raise MCPError(-32001, f"cannot file: {text}", {"echo": text, "fields": [text]})

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep for the given number of seconds, then answer."""
        started = time.monotonic()
        await anyio.sleep(seconds)
        return f"slept {time.monotonic() - started:.2f}s"

    @server.tool()
    async def steps(count: int, delay: float, ctx: Context, note: str = "") -> str:
        """Work through ``count`` steps, reporting progress after each
        (message ``step i of count``, with ``note`` appended)."""
        for i in range(1, count + 1):
            await anyio.sleep(delay)
            await ctx.report_progress(i, count, f"step {i} of {count}{note}")
        return f"done {count}"

    @server.tool()
    async def wait_for_cancel(tag: str, seconds: float) -> str:
        """Sleep; if the call is cancelled meanwhile, remember ``tag``."""
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            CANCELLED_TAGS.append(tag)
            raise
        return f"not cancelled {tag}"

    @server.tool()
    async def ask_user(question: str, ctx: Context) -> str:
        """Ask the client's user (an elicitation) during the call; say how
        that went."""
        try:
            result = await ctx.request_context.session.elicit_form(
                question, {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                related_request_id=ctx.request_id)
        except MCPError as e:
            return f"refused {e.code}"
        except Exception as e:  # no back-channel (the stateless era)
            return f"could not ask: {type(e).__name__}"
        return f"answered {result.action}"

    @server.tool()
    def cancelled_tags() -> list[str]:
        """The tags of the calls cancelled so far."""
        return list(CANCELLED_TAGS)

    return server


def build_ops() -> MCPServer:
    server = MCPServer("ops")

    @server.tool()
    def send_email(to: str, subject: str) -> str:
        """Send an email."""
        return f"sent {subject!r} to {to}"

    @server.tool()
    def refund(order_id: str, amount: int) -> dict:
        """Refund an order."""
        return {"order_id": order_id, "refunded": amount}

    return server


def build_vault() -> MCPServer:
    server = MCPServer("vault")

    @server.tool(description="Echo the Authorization header this server received (for credential injection tests)."
                 + os.environ.get("TOOL_DESCRIPTION_SUFFIX", ""))
    def whoami(ctx: Context) -> str:
        headers = ctx.headers or {}
        return headers.get("authorization", "<none>")

    @server.tool(description="Echo every HTTP header this server received, as a JSON object.")
    def headers(ctx: Context) -> dict:
        return dict(ctx.headers or {})

    return server


# What the ``docs`` server's files hold: a public readme that leaks a card
# number and an e-mail address (for masking), a draft, and a secret.
DOCS = {
    "readme.md": f"# Readme\nBilling contact ada@example.com, card {CARD_NUMBER}.",
    "drafts/plan.md": "unreleased plan",
    "guide.md": "How to use the docs server.",
}


def build_docs() -> MCPServer:
    server = MCPServer("docs")

    @server.resource("file:///public/readme.md", name="readme", mime_type="text/markdown")
    def readme() -> str:
        return DOCS["readme.md"]

    @server.resource("file:///public/drafts/plan.md", name="plan", mime_type="text/markdown")
    def plan() -> str:
        return DOCS["drafts/plan.md"]

    @server.resource("file:///secret/key", name="key")
    def key() -> str:
        return PRIVATE_KEY

    @server.resource("file:///public/pages/{page}", name="page", mime_type="text/plain")
    def page(page: str) -> str:
        return f"page {page}: " + DOCS.get(f"{page}.md", "(none)")

    @server.prompt(description="Summarize a topic for a customer." + os.environ.get("TOOL_DESCRIPTION_SUFFIX", ""))
    def summarize(topic: str, audience: str = "customer") -> str:
        return f"Summarize {topic} for a {audience}. Escalations go to ada@example.com."

    @server.prompt(description="Not attached to anyone.")
    def internal(topic: str) -> str:
        return f"internal notes on {topic}"

    @server.tool()
    def search(query: str) -> str:
        return f"results for {query}"

    return server


BUILDERS = {"crm": build_crm, "tickets": build_tickets, "ops": build_ops, "vault": build_vault,
            "docs": build_docs}


def main() -> None:
    name, port, encoding = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if encoding not in ("json", "sse"):
        raise SystemExit(f"encoding must be json or sse, got {encoding!r}")
    # With a certificate and key, serve https (for the upstream TLS tests).
    tls = {"ssl_certfile": sys.argv[4], "ssl_keyfile": sys.argv[5]} if len(sys.argv) > 5 else {}
    server = BUILDERS[name]()
    app = server.streamable_http_app(json_response=(encoding == "json"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **tls)


if __name__ == "__main__":
    main()
