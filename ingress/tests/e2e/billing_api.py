"""A small billing REST API on FastAPI, for the OpenAPI upstream tests.

FastAPI generates its own OpenAPI document at ``/openapi.json``; toolgate
exposes its operations as tools. Every request's path and headers are kept
(``GET /_seen``, not in the document) so a test can check exactly what
toolgate sent.

Run: ``python billing_api.py PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

CARD = "4111 1111 1111 1111"
INVOICES = {
    "inv-1": {"id": "inv-1", "status": "open", "total": 120, "card": CARD},
    "inv-2": {"id": "inv-2", "status": "paid", "total": 80, "card": CARD},
}

app = FastAPI(title="billing", version="1.0.0")
SEEN: list[dict] = []


@app.middleware("http")
async def remember(request: Request, call_next):
    if request.url.path not in ("/_seen", "/openapi.json"):
        SEEN.append({
            "method": request.method,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "query": request.url.query,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        })
    return await call_next(request)


class Refund(BaseModel):
    invoice_id: str
    amount: int
    reason: str | None = None


@app.get("/invoices", operation_id="listInvoices", tags=["invoices"], summary="List invoices")
def list_invoices(status: str | None = None) -> list[dict]:
    return [i for i in INVOICES.values() if status is None or i["status"] == status]


@app.get("/invoices/{invoice_id}", operation_id="getInvoice", tags=["invoices"], summary="One invoice")
def get_invoice(invoice_id: str) -> dict:
    if invoice_id not in INVOICES:
        raise HTTPException(status_code=404, detail=f"no invoice {invoice_id}")
    return INVOICES[invoice_id]


@app.post("/refunds", operation_id="createRefund", tags=["refunds"], summary="Refund an invoice")
def create_refund(refund: Refund) -> dict:
    if refund.invoice_id not in INVOICES:
        raise HTTPException(status_code=404, detail=f"no invoice {refund.invoice_id}")
    return {"refund_id": f"rf-{len(SEEN)}", "invoice_id": refund.invoice_id, "amount": refund.amount}


@app.delete("/invoices/{invoice_id}", operation_id="deleteInvoice", tags=["admin"])
def delete_invoice(invoice_id: str) -> dict:
    return {"deleted": invoice_id}


@app.get("/_seen", include_in_schema=False)
def seen() -> list[dict]:
    return SEEN


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
