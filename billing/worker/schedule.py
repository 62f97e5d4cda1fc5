"""Which jobs a worker runs, how often, and which are due: pure scheduling logic (times are
plain numbers of seconds from any monotonic clock the caller reads)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# every job, in the order a worker runs them when several are due at once, and its default
# interval in seconds (`billing worker --interval` overrides them)
JOB_NAMES = ("partitions", "close", "alerts", "outbox", "purge_holds", "stripe_sync")
DEFAULT_INTERVALS = {"partitions": 3600.0, "close": 300.0, "alerts": 900.0, "outbox": 5.0, "purge_holds": 3600.0,
                     "stripe_sync": 300.0}


class WorkerConfigError(ValueError):
    """A job list or interval that does not parse (the message names what is wrong)."""


def parse_jobs(text: str | None) -> list[str] | None:
    """``"close,outbox"`` -> ``["close", "outbox"]`` (in ``JOB_NAMES`` order, each once);
    None -> None (every configured job). An unknown or empty name is an error."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    unknown = [n for n in names if n not in JOB_NAMES]
    if unknown:
        raise WorkerConfigError(f"--jobs: unknown job(s) {', '.join(repr(n) for n in unknown)}; "
                                f"the jobs are {', '.join(JOB_NAMES)}")
    return [n for n in JOB_NAMES if n in names]


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise WorkerConfigError(f"--interval {what}: not a number of seconds: {text!r}") from None
    if not (0 < value <= 86_400 * 31):  # NaN fails this too
        raise WorkerConfigError(f"--interval {what}: must be over 0 and at most 31 days (in seconds), not {text!r}")
    return value


def parse_intervals(values: Iterable[str]) -> dict[str, float]:
    """Each value is ``N`` (every job, seconds) or ``job=N`` (that job); later values win.
    Returns every job's interval (defaults for the rest)."""
    out = dict(DEFAULT_INTERVALS)
    for value in values:
        name, sep, number = value.partition("=")
        if not sep:
            seconds = _seconds(value, "")
            out = {n: seconds for n in JOB_NAMES}
            continue
        name = name.strip()
        if name not in JOB_NAMES:
            raise WorkerConfigError(f"--interval {value!r}: unknown job {name!r}; the jobs are {', '.join(JOB_NAMES)}")
        out[name] = _seconds(number.strip(), name)
    return out


class Schedule:
    """When each job runs next: every job is due at ``start``, then ``interval`` seconds
    after its previous run ended (a slow run never makes runs pile up)."""

    def __init__(self, names: Sequence[str], intervals: dict[str, float], start: float):
        self.names = list(names)
        self.intervals = {n: intervals[n] for n in self.names}
        self.next_at = {n: start for n in self.names}

    def due(self, now: float) -> list[str]:
        """The jobs due at ``now``, in run order."""
        return [n for n in self.names if self.next_at[n] <= now]

    def ran(self, name: str, ended: float) -> None:
        self.next_at[name] = ended + self.intervals[name]

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the next job is due (0 when one is due already)."""
        if not self.names:
            return float("inf")
        return max(0.0, min(self.next_at.values()) - now)
