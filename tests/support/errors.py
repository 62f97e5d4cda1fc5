"""The error body every API error has (``billing.api.errors``), checked in one place."""

from __future__ import annotations

from typing import Any

TYPES = {"invalid_request_error", "authentication_error", "permission_error", "idempotency_error",
         "rate_limit_error", "api_error"}


def error_of(body: Any) -> dict[str, Any]:
    """``body["error"]`` once it has Stripe's shape: ``type`` (one of Stripe's), ``code`` and
    ``message`` strings, ``param`` and ``request_id`` present (strings or null)."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert error.get("type") in TYPES, body
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str), body
    assert "param" in error and (error["param"] is None or isinstance(error["param"], str)), body
    assert "request_id" in error and (error["request_id"] is None or isinstance(error["request_id"], str)), body
    assert set(error) <= {"type", "code", "message", "param", "request_id", "details"}, body
    return error
