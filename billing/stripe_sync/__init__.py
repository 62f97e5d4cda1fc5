"""Stripe: push finalized invoices and credit notes (``sync.StripeSync``), reconcile, payment
webhooks (``webhooks.handle_event``; the route is ``billing.api.stripe_webhook``).

Dunning is not decided here: a failed payment sets ``invoice.payment_failed_at`` (webhooks),
and quota decisions deny with ``payment_overdue`` once the plan's ``dunning.deny_after_days``
have passed since the oldest unpaid failure (``billing.quota.decide``, fed by
``billing.reservations.holds``).

Modules are imported directly (``from billing.stripe_sync.sync import StripeSync``) so that
using one part does not import FastAPI or the Stripe client for the others."""
