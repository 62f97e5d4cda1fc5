"""How the ledger's tables would be spread over a Citus cluster (README "Past one database
server"). Nothing here runs against Citus; ``tests/ledger/test_citus_ready.py`` holds the
schema and the hot-path statements to it.

- **Distributed by ``customer_id``** (co-located shards): every table with a ``customer_id``
  column that is not listed below. Each primary and unique key includes ``customer_id``
  (Citus requires it), and every statement of the hot path (ingest, check, reserve, commit,
  close) names the customer(s) it touches, so Citus routes it to their shards.
- **Reference tables** (a copy on every node, written rarely): the plans' side of billing
  and whatever a distributed statement joins with.
- **Coordinator-local tables**: operational queues and records that no distributed
  statement joins with.

Plans themselves are YAML files (``BILLING_PLANS_DIR``), not tables.
"""

from __future__ import annotations

DISTRIBUTION_COLUMN = "customer_id"

# table -> why it is not distributed by customer
REFERENCE_TABLES: dict[str, str] = {
    "customer": "the customer's timezone and currency, joined by counting and checks",
    "subscription": "which plan counts an event: read by every ingestion chunk and quota context",
    "seat_change": "seats of a subscription (read with it)",
    "addon_subscription": "add-on plans of a subscription (read with it)",
    "contract_override": "a subscription's contract values (read with it)",
    "coupon": "the coupon book",
    "coupon_redemption": "coupons on a subscription (read with it)",
    "term_commitment": "a subscription's commitments (read with it)",
    "cost_price": "the cost book: prices every event",
    "api_key": "keys are looked up by their hash before the customer is known",
    "ledger_state": "ledger-wide flags (cost book version, archive horizon) every writer reads",
    "number_sequence": "gap-free document numbers, one sequence for the ledger",
    "credit_grant": "grants are read at close with the invoice documents",
    "budget": "a customer's scoped budgets: created rarely (API, CLI), joined into the quota context",
    "invoice": "billing documents: written by the close, a few per customer and period",
    "invoice_line": "lines of a document (with it)",
    "credit_burn": "credit drawn by a document (with it)",
    "invoice_recheck": "late-event bookkeeping of a document (with it)",
    "invoice_correction": "corrections of a document (with it)",
    "invoice_recost": "re-costed periods of a document (with it)",
}
LOCAL_TABLES: dict[str, str] = {
    "idempotency_record": "HTTP idempotency keys of the API (scope, key)",
    "webhook_outbox": "the webhook delivery queue, drained by one dispatcher",
    "alembic_version": "the migration level",
}


def distributed(table: str, columns: set[str]) -> bool:
    """Is ``table`` (with these columns) distributed by customer?"""
    return DISTRIBUTION_COLUMN in columns and table not in REFERENCE_TABLES and table not in LOCAL_TABLES
