"""``billing.api.checks.AsyncChecks`` (batched checks on the event loop) with a stand-in
quota: every future resolved once, with its own answer; batches capped; a failure mid-batch
keeps the answers decided before it; a second event loop asks alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from billing.api.checks import AsyncChecks
from billing.errors import BillingError, ErrorCode


class FakeQuota:
    def __init__(self, fail_after: int | None = None):
        self.batches: list[list[str]] = []
        self.alone: list[str] = []
        self.fail_after = fail_after
        self.gate = threading.Event()
        self.gate.set()

    def check_batch(self, ops) -> None:
        self.gate.wait(5)
        self.batches.append([op.customer for op in ops])
        for i, op in enumerate(ops):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("the database went away")
            if op.customer == "nobody":
                op.error = BillingError("unknown customer", code=ErrorCode.CUSTOMER_NOT_FOUND)
            else:
                op.result = f"decision for {op.customer}"

    def check(self, customer, key, quantity=1, **_kw):
        self.alone.append(customer)
        return f"alone for {customer}"


async def _ask_all(checks: AsyncChecks, customers: list[str]) -> list:
    return await asyncio.gather(*(checks.check(c, "requests") for c in customers), return_exceptions=True)


def test_each_question_gets_its_own_answer_in_capped_batches():
    quota = FakeQuota()
    checks = AsyncChecks(quota, max_batches=2, max_batch=3)
    customers = [f"c{i}" for i in range(10)] + ["nobody"]

    async def run():
        quota.gate.clear()  # hold the first batches so the rest queue up
        asked = asyncio.ensure_future(_ask_all(checks, customers))
        await asyncio.sleep(0.05)
        quota.gate.set()
        return await asked

    got = asyncio.run(run())
    assert got[:10] == [f"decision for c{i}" for i in range(10)]
    assert isinstance(got[10], BillingError) and got[10].code == ErrorCode.CUSTOMER_NOT_FOUND
    assert max(len(b) for b in quota.batches) <= 3 and sum(len(b) for b in quota.batches) == 11
    assert any(len(b) > 1 for b in quota.batches)  # questions did share batches
    assert checks._running == 0 and checks._pending == []


def test_a_failure_mid_batch_keeps_what_was_decided_before_it():
    quota = FakeQuota(fail_after=2)
    checks = AsyncChecks(quota, max_batches=1, max_batch=10)

    async def run():
        quota.gate.clear()
        first = asyncio.ensure_future(checks.check("lead", "requests"))  # runs alone, holds the slot
        await asyncio.sleep(0.02)
        rest = asyncio.ensure_future(_ask_all(checks, ["a", "b", "c", "d"]))
        await asyncio.sleep(0.02)
        quota.gate.set()
        return await first, await rest

    lead, rest = asyncio.run(run())
    assert lead == "decision for lead"
    assert rest[:2] == ["decision for a", "decision for b"]
    assert all(isinstance(r, RuntimeError) for r in rest[2:])


def test_a_cancelled_question_does_not_disturb_the_others():
    quota = FakeQuota()
    checks = AsyncChecks(quota, max_batches=1, max_batch=10)

    async def run():
        quota.gate.clear()
        tasks = [asyncio.ensure_future(checks.check(c, "requests")) for c in ("a", "b", "c")]
        await asyncio.sleep(0.02)
        tasks[1].cancel()
        quota.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    a, b, c = asyncio.run(run())
    assert (a, c) == ("decision for a", "decision for c") and isinstance(b, asyncio.CancelledError)
    assert checks._running == 0


def test_a_second_event_loop_asks_alone():
    quota = FakeQuota()
    checks = AsyncChecks(quota)
    assert asyncio.run(checks.check("a", "requests")) == "decision for a"
    assert asyncio.run(checks.check("b", "requests")) == "alone for b"  # another loop: no shared batches
    assert quota.alone == ["b"]


def test_a_bad_question_is_refused_before_it_joins_a_batch():
    quota = FakeQuota()
    with pytest.raises(BillingError) as err:
        asyncio.run(AsyncChecks(quota).check("a", "requests", quantity=-1))
    assert err.value.code == ErrorCode.VALIDATION and quota.batches == []
