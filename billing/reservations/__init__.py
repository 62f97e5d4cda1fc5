"""Two-phase quota use over the database (holds, the quota writer and its SQL): the impure side of ``billing.quota``."""
