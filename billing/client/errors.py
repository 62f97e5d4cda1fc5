"""Errors the client raises (``BillingError``s with the stable codes of ``billing.errors``)."""

from __future__ import annotations

from typing import Any

from billing.errors import BillingError, ErrorCode


class ApiError(BillingError):
    """An error response of the HTTP API (``status`` is its HTTP status; ``raw_code`` the
    code as sent, also when it is not one of ``ErrorCode``; ``type``, ``param`` and
    ``request_id`` as the body's ``error`` says; ``retry_after`` from the ``Retry-After``
    header, in seconds)."""

    def __init__(self, message: str, *, code: ErrorCode | str, status: int, details: Any = None,
                 retry_after: float | None = None, type: str | None = None, param: str | None = None,
                 request_id: str | None = None):
        try:
            parsed: ErrorCode | None = ErrorCode(code)
        except ValueError:
            parsed = None
        super().__init__(message, code=parsed or ErrorCode.EXTERNAL, details=details, param=param)
        self.raw_code = str(code)
        self.status = status
        self.retry_after = retry_after
        self.type = type
        self.request_id = request_id


class QuotaDenied(BillingError):
    """``guarded_call`` was denied: ``decision`` says why and when to retry."""

    code = ErrorCode.FORBIDDEN

    def __init__(self, decision: dict[str, Any]):
        super().__init__(f"quota denied: {decision.get('reason')}", details=decision)
        self.decision = decision
        self.reason = decision.get("reason")
        self.retry_after = decision.get("retry_after")


class UsageRefused(BillingError):
    """``guarded_call`` refused BEFORE the LLM call: the usage it would record could not be
    costed (``unpriced_model``) or metered (``unmetered_type``, ``unmetered_usage``) under
    the customer's plan. ``problems`` lists each as ``{"code", "message"}``; the holds it
    took were released. Pass ``allow_unpriced=True`` / ``allow_unmetered=True`` to go on."""

    def __init__(self, problems: list[dict[str, str]]):
        codes = {p["code"] for p in problems}
        code = ErrorCode.UNKNOWN_MODEL if "unpriced_model" in codes else ErrorCode.UNKNOWN_EVENT_TYPE
        super().__init__("; ".join(p["message"] for p in problems), code=code, details=problems)
        self.problems = problems
