"""Domain errors carry a stable ``ErrorCode``, never an HTTP status (api/ maps them)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # plans / catalog
    PLAN_INVALID = "plan_invalid"
    PLAN_NOT_FOUND = "plan_not_found"
    # events / ingestion (an event naming an unknown customer: customer_not_found)
    EVENT_INVALID = "event_invalid"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_MODEL = "unknown_model"
    NEGATIVE_QUANTITY = "negative_quantity"
    NON_NUMERIC_QUANTITY = "non_numeric_quantity"
    QUANTITY_TOO_LARGE = "quantity_too_large"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    EVENT_CONFLICT = "event_conflict"
    EVENT_TOO_LARGE = "event_too_large"
    EVENT_ARCHIVED = "event_archived"  # its month was archived (billing events archive): the period is paid
    # customers / subscriptions / invoices
    CUSTOMER_EXISTS = "customer_exists"
    CUSTOMER_NOT_FOUND = "customer_not_found"
    SUBSCRIPTION_NOT_FOUND = "subscription_not_found"
    SUBSCRIPTION_EXISTS = "subscription_exists"
    INVOICE_NOT_FOUND = "invoice_not_found"
    INVALID_TRANSITION = "invalid_transition"  # a document or reservation is not in a status this action leaves
    PERIOD_INVOICED = "period_invoiced"
    CURRENCY_MISMATCH = "currency_mismatch"
    # contracts (billing.contracts): overrides, coupons, term commitments
    CONTRACT_INVALID = "contract_invalid"
    COUPON_NOT_FOUND = "coupon_not_found"
    BUDGET_NOT_FOUND = "budget_not_found"
    # quota
    RESERVATION_NOT_FOUND = "reservation_not_found"
    RESERVATION_STATE = "invalid_transition"
    # auth
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    # stripe
    INVALID_SIGNATURE = "invalid_signature"
    # HTTP requests (billing/api): the Idempotency-Key header, the body's media type
    IDEMPOTENCY_KEY_INVALID = "idempotency_key_invalid"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_PAYLOAD = "invalid_payload"
    WEBHOOK_NOT_CONFIGURED = "webhook_not_configured"
    WEBHOOK_TARGET_FORBIDDEN = "webhook_target_forbidden"  # an endpoint URL reaching a non-public address
    EVENT_LOG_NOT_CONFIGURED = "event_log_not_configured"  # Prefer: respond-async without BILLING_NATS_URL
    # requests
    REQUEST_TOO_LARGE = "request_too_large"
    PARAMETER_UNKNOWN = "parameter_unknown"  # a query parameter the route does not take (``param`` names it)
    PARAMETER_INVALID = "parameter_invalid"  # a query parameter out of range or malformed (a limit, a cursor)
    # generic
    VALIDATION = "validation_error"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    EXTERNAL = "external_service_error"
    UNAVAILABLE = "service_unavailable"  # the database is busy or unreachable: retry later
    INTERNAL = "internal_error"


class BillingError(Exception):
    """Base domain error: a stable code, a human message, optional details, and the request
    parameter at fault (``param``: a field or query parameter name, dotted when nested)."""

    code: ErrorCode = ErrorCode.VALIDATION
    param: str | None = None

    def __init__(self, message: str, *, code: ErrorCode | None = None, details: Any = None,
                 param: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.param is not None:
            out["param"] = self.param
        if self.details is not None:
            out["details"] = self.details
        return out
