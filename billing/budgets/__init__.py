"""Budgets at every scope: their rows (``repository.py``) and the one service the CLI and API
call (``service.py``). The rule is ``billing.quota.budgets``; the quota reads them with the
customer's context (``billing.reservations.budget_sql``)."""
