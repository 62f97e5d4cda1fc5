"""Persistence: tables, engines and migrations glue, and the SQL of the ledger (repositories)."""
