"""Upstream MCP servers that toolgate aggregates in the end-to-end tests.

Usage: python upstream_server.py NAME PORT json|sse

* ``crm``      -- customer records (lookup_customer, delete_record)
* ``tickets``  -- a ticket tracker (create_ticket, close_ticket, slow)
* ``ops``      -- operations (send_email, refund), for the policy tests

``json`` makes the server answer POSTs with ``application/json`` bodies,
``sse`` with ``text/event-stream`` bodies, so toolgate's upstream client is
exercised with both response encodings of the streamable HTTP transport.
"""

from __future__ import annotations

import sys
import time

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

CARD_NUMBER = "4111 1111 1111 1111"


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
    async def slow(seconds: float) -> str:
        """Sleep for the given number of seconds, then answer."""
        started = time.monotonic()
        await anyio.sleep(seconds)
        return f"slept {time.monotonic() - started:.2f}s"

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


BUILDERS = {"crm": build_crm, "tickets": build_tickets, "ops": build_ops}


def main() -> None:
    name, port, encoding = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if encoding not in ("json", "sse"):
        raise SystemExit(f"encoding must be json or sse, got {encoding!r}")
    server = BUILDERS[name]()
    app = server.streamable_http_app(json_response=(encoding == "json"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
