"""`billing worker`: the scheduled background jobs, apart from `billing serve`.

- ``schedule``: which jobs exist, their intervals, when each is due (pure: no database, no clock).
- ``locks``: one lock per job name, so two workers never run the same job at once
  (PostgreSQL: a session advisory lock; SQLite: a file lock next to the database file).
- ``jobs``: what each job does (close, alerts, outbox, purge_holds, stripe_sync) over one database.
- ``runner``: runs jobs under their locks, times them and reports one record per run.
"""
