"""Invoices and credit notes over HTTP: the lists (a page at a time), one credit note, and
the writes of ``billing invoice ...``: close the periods that ended by ``as_of``, pay,
void, mark uncollectible. Each calls the same ``Invoicing`` method as the CLI (the close
lock, the one invoice lifecycle: ``billing.invoicing``) and answers what the CLI prints
with ``--json`` (plus ``object``). One invoice with its lines: ``GET /v1/invoices/{id}``
(``billing.api.routes``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from billing.api.pagination import (
    LIST_ERRORS, PageParams, customer_filter, error_responses, list_object, page_params, reject_unknown_query)
from billing.api.resources import InvoiceList, InvoiceObject, invoice_doc
from billing.api.routes import Admin, Read
from billing.errors import BillingError, ErrorCode
from billing.invoicing.lifecycle import InvoiceStatus
from billing.ledger.accounts import MAX_ID_LENGTH, MAX_ROW_ID, check_instant
from billing.store.pages import invoices_page

router = APIRouter(prefix="/v1", tags=["invoices"])
DocumentId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
_ONE_ERRORS = (ErrorCode.INVOICE_NOT_FOUND, ErrorCode.VALIDATION, ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloseIn(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"as_of": "2026-11-01T00:00:00Z"}]})

    as_of: AwareDatetime = Field(description="Close every period that ended by this instant",
                                 examples=["2026-11-01T00:00:00Z"])
    allow_future: bool = Field(False, description="Allow an as_of after the clock (finalizes periods that have "
                                                  "not ended)")


class CloseOut(BaseModel):
    watermark: int = Field(description="The highest event id the close saw")
    invoices: list[int] = Field(description="The invoices it finalized")
    credit_notes: list[int]
    adjusted_periods: int = Field(description="Closed periods re-rated for late events")
    rated_from_counters: int


class DocumentAtIn(_Strict):
    at: AwareDatetime | None = Field(None, description="When (default: now)", examples=["2026-11-05T10:00:00Z"])


def _list(request: Request, principal, kind: str, page: PageParams, customer: str | None,
          status: InvoiceStatus | None, subscription: int | None) -> dict[str, Any]:
    with request.app.state.services.engine.connect() as conn:
        rows = invoices_page(conn, kind=kind, limit=page.limit, after=page.after, before=page.before,
                             customer=customer_filter(principal, customer),
                             status=status.value if status else None, subscription=subscription)
    return list_object(request, "invoices" if kind == "invoice" else "credit_notes", rows,
                       [invoice_doc(r, None) for r in rows.rows])


Customer = Annotated[str | None, Query(max_length=MAX_ID_LENGTH)]
SubscriptionFilter = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]


@router.get("/invoices", response_model=InvoiceList, responses=error_responses(*LIST_ERRORS),
            summary="Invoices, oldest first, without their lines (credit notes: /v1/credit_notes)")
def list_invoices(request: Request, principal: Read, page: Annotated[PageParams, Depends(page_params("invoices"))],
                  customer: Customer = None, status: InvoiceStatus | None = None,
                  subscription: SubscriptionFilter = None) -> dict[str, Any]:
    return _list(request, principal, "invoice", page, customer, status, subscription)


@router.get("/credit_notes", response_model=InvoiceList, responses=error_responses(*LIST_ERRORS),
            summary="Credit notes, oldest first, without their lines")
def list_credit_notes(request: Request, principal: Read,
                      page: Annotated[PageParams, Depends(page_params("credit_notes"))],
                      customer: Customer = None, status: InvoiceStatus | None = None,
                      subscription: SubscriptionFilter = None) -> dict[str, Any]:
    return _list(request, principal, "credit_note", page, customer, status, subscription)


def _document(request: Request, principal, document_id: int, kind: str | None = None) -> dict[str, Any]:
    """The document with its lines, once this key may see it (another customer's, or one of
    another kind, is the same 404 as one that does not exist)."""
    try:
        inv, lines = request.app.state.services.invoicing.get(document_id)
    except BillingError as exc:
        if exc.code != ErrorCode.INVOICE_NOT_FOUND:
            raise
        inv = lines = None
    if inv is None or (kind is not None and inv.kind != kind) or \
            (principal.customer is not None and inv.customer_id != principal.customer):
        what = "credit note" if kind == "credit_note" else "invoice"
        raise BillingError(f"unknown {what} {document_id}", code=ErrorCode.INVOICE_NOT_FOUND)
    return invoice_doc(inv, lines)


@router.get("/credit_notes/{credit_note_id}", response_model=InvoiceObject, dependencies=[Depends(reject_unknown_query)],
            responses=error_responses(*_ONE_ERRORS, ErrorCode.PARAMETER_UNKNOWN),
            summary="One credit note with its (negative) lines")
def get_credit_note(credit_note_id: DocumentId, request: Request, principal: Read) -> dict[str, Any]:
    return _document(request, principal, credit_note_id, "credit_note")


@router.post("/invoices/close", response_model=CloseOut,
             responses=error_responses(ErrorCode.VALIDATION, ErrorCode.CONFLICT, ErrorCode.UNAUTHENTICATED,
                                       ErrorCode.FORBIDDEN),
             summary="Finalize every subscription period that ended by as_of (idempotent; `billing invoice close`)")
def close_periods(body: CloseIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(None)  # a close is every customer's
    check_instant(body.as_of, "as_of")  # the CLI's window for --as-of
    return request.app.state.services.invoicing.close(body.as_of, allow_future=body.allow_future).to_json()


_MOVES = {"pay": "mark_paid", "void": "void", "mark_uncollectible": "mark_uncollectible"}


def _move(request: Request, principal, document_id: int, body: DocumentAtIn | None,
          action: Literal["pay", "void", "mark_uncollectible"]) -> dict[str, Any]:
    _document(request, principal, document_id)  # 404 for one this key may not see
    svc = request.app.state.services
    invoicing = svc.invoicing
    at = check_instant(body.at, "at") if body is not None and body.at is not None else svc.clock()
    getattr(invoicing, _MOVES[action])(document_id, at)
    return invoice_doc(*invoicing.get(document_id))


_MOVE_ERRORS = (*_ONE_ERRORS, ErrorCode.INVALID_TRANSITION)
AtBody = Annotated[DocumentAtIn | None, Body(examples=[{"at": "2026-11-05T10:00:00Z"}])]


@router.post("/invoices/{invoice_id}/pay", response_model=InvoiceObject, responses=error_responses(*_MOVE_ERRORS),
             summary="finalized or uncollectible -> paid (idempotent; `billing invoice pay`)")
def pay_invoice(invoice_id: DocumentId, request: Request, principal: Admin, body: AtBody = None) -> dict[str, Any]:
    return _move(request, principal, invoice_id, body, "pay")


@router.post("/invoices/{invoice_id}/void", response_model=InvoiceObject, responses=error_responses(*_MOVE_ERRORS),
             summary="finalized or uncollectible -> void, an invoice or a credit note (idempotent; "
                     "`billing invoice void`)")
def void_invoice(invoice_id: DocumentId, request: Request, principal: Admin, body: AtBody = None) -> dict[str, Any]:
    return _move(request, principal, invoice_id, body, "void")


@router.post("/invoices/{invoice_id}/mark_uncollectible", response_model=InvoiceObject,
             responses=error_responses(*_MOVE_ERRORS),
             summary="finalized -> uncollectible: written off, still payable or voidable (`billing invoice "
                     "uncollectible`)")
def mark_uncollectible(invoice_id: DocumentId, request: Request, principal: Admin,
                       body: AtBody = None) -> dict[str, Any]:
    return _move(request, principal, invoice_id, body, "mark_uncollectible")
