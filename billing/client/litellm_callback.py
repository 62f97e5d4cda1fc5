"""``BillingCallback``: a LiteLLM ``CustomLogger`` that records every completion LiteLLM makes
as a usage event, through a billing client (``LocalClient`` or ``HttpClient``: their retries
and idempotency keys apply). LiteLLM is the optional extra ``litellm``::

    import litellm
    from billing.client import HttpClient
    from billing.client.litellm_callback import BillingCallback

    litellm.callbacks = [BillingCallback(HttpClient("http://billing:8000", api_key="bk_..."))]
    litellm.completion(model="gpt-4o", messages=[...], metadata={"customer": "acme", "feature": "chat"})

The event is ``billing.client.litellm_events.litellm_event``'s. A callback must never break
the caller's completion: a completion naming no customer, a rejected event or a failed
request is logged (``billing.litellm``) and counted (``skipped`` / ``rejected`` / ``failed``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from billing.client.base import BillingClient
from billing.client.litellm_events import litellm_event

log = logging.getLogger("billing.litellm")


class BillingCallback(CustomLogger):
    """Records LiteLLM's successful calls; ``customer_key`` / ``feature_key`` / ``task_key``
    name the request ``metadata`` entries read (the customer falls back on ``user``)."""

    def __init__(self, client: BillingClient, *, customer_key: str = "customer", feature_key: str = "feature",
                 task_key: str = "task", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.customer_key, self.feature_key, self.task_key = customer_key, feature_key, task_key
        self.recorded = self.skipped = self.rejected = self.failed = 0

    def log_success_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001 (LiteLLM's names)
        event = litellm_event(kwargs, response_obj, end_time, customer_key=self.customer_key,
                              feature_key=self.feature_key, task_key=self.task_key)
        if event is None:
            self.skipped += 1
            log.warning("LiteLLM call %s not recorded: no customer (metadata[%r] or user) or no id",
                        kwargs.get("litellm_call_id"), self.customer_key)
            return
        try:
            answer = self.client.record([event], idempotency_key=f"litellm-{event['id']}"[:200])
        except Exception:  # noqa: BLE001 - never fail the caller's completion
            self.failed += 1
            log.exception("LiteLLM call %s: recording its usage failed", event["id"])
            return
        result = answer["results"][0]
        if result["status"] in ("rejected", "conflict"):
            self.rejected += 1
            log.warning("LiteLLM call %s: usage %s: %s: %s", event["id"], result["status"], result["code"],
                        result["message"])
        else:
            self.recorded += 1

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001
        await asyncio.to_thread(self.log_success_event, kwargs, response_obj, start_time, end_time)
