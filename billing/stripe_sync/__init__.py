"""Stripe: push finalized invoices (``sync.StripeSync``), payment webhooks
(``webhooks.router``), the dunning rule (``dunning.is_payment_overdue``).

Modules are imported directly (``from billing.stripe_sync.sync import StripeSync``) so that
using one part does not import FastAPI or the Stripe client for the others."""
