"""Outgoing webhooks, as the API server uses them: the signing and the delivery loop live
in ``billing.alerts.delivery`` (the worker delivers the outbox without the server)."""

from __future__ import annotations

from billing.alerts.delivery import WebhookDispatcher, sign, verify_signature

__all__ = ["WebhookDispatcher", "sign", "verify_signature"]
