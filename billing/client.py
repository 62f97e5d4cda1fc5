"""Python client: one interface in-process (``LocalClient``) and over HTTP (``HttpClient``),
and ``guarded_call``, which wraps an LLM call in reserve -> call -> commit.

Both clients return the HTTP API's JSON shapes (plain dicts) and raise
``billing.errors.BillingError`` (``ApiError`` over HTTP) with the same stable codes::

    client = HttpClient("http://localhost:8000", api_key="bk_...")
    # or: client = LocalClient.open("sqlite:///billing.db", "plans")
    result = guarded_call(client, "acme", "messages", lambda model: llm.chat(model=model, ...),
                          model="claude-sonnet-4-5", properties={"feature": "support-chat"})
    result.response, result.decision["lane"], result.usage

``guarded_call`` reserves the estimate, calls your function with the model of the lane it
was granted (a downgrade may name a cheaper model), then commits one event with the token
counts read from the response's ``usage`` (OpenAI- or Anthropic-style). If the call raises,
the hold is released and the exception propagates. A denied reservation raises
``QuotaDenied`` (with the decision: reason, retry_after) without calling the function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.errors import BillingError, ErrorCode


class ApiError(BillingError):
    """An error response of the HTTP API (``status`` is its HTTP status)."""

    def __init__(self, message: str, *, code: ErrorCode | str, status: int, details: Any = None):
        try:
            parsed: ErrorCode | None = ErrorCode(code)
        except ValueError:
            parsed = None
        super().__init__(message, code=parsed or ErrorCode.EXTERNAL, details=details)
        self.raw_code = str(code)
        self.status = status


class QuotaDenied(BillingError):
    """``guarded_call`` was denied: ``decision`` says why and when to retry."""

    code = ErrorCode.FORBIDDEN

    def __init__(self, decision: dict[str, Any]):
        super().__init__(f"quota denied: {decision.get('reason')}", details=decision)
        self.decision = decision
        self.reason = decision.get("reason")
        self.retry_after = decision.get("retry_after")


def _quota_body(customer: str, meter: str | None, charge: str | None, quantity, model, task, tokens, cost,
                steps) -> dict[str, Any]:
    body: dict[str, Any] = {"customer": customer, "quantity": str(quantity)}
    if charge is not None:
        body["charge"] = charge
    else:
        body["meter"] = meter
    for name, value in (("model", model), ("task", task), ("tokens", tokens), ("steps", steps)):
        if value is not None:
            body[name] = value
    if cost:
        body["cost"] = str(cost)
    return body


class BillingClient:
    """The interface both clients implement (JSON-shaped dicts in and out)."""

    def check(self, customer: str, meter: str | None = None, *, charge: str | None = None,
              quantity: Decimal | int | str = 1, model: str | None = None, task: str | None = None,
              tokens: int | None = None, cost: Decimal | int | str = 0, steps: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def reserve(self, customer: str, meter: str | None = None, *, charge: str | None = None,
                quantity: Decimal | int | str = 1, model: str | None = None, task: str | None = None,
                tokens: int | None = None, cost: Decimal | int | str = 0, steps: int | None = None,
                ttl: float = 60.0, request_id: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def commit(self, reservation_id: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def release(self, reservation_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def record(self, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def usage(self, customer: str) -> dict[str, Any]:
        raise NotImplementedError


class LocalClient(BillingClient):
    """In-process: the same services the HTTP API uses, no network."""

    def __init__(self, quota):
        self.quota = quota

    @classmethod
    def open(cls, database_url: str, plans: str = "plans", **quota_kwargs) -> "LocalClient":
        from billing.catalog import Catalog
        from billing.ledger.db import engine_for
        from billing.ledger.holds import Quota

        catalog = Catalog.from_paths(plans)
        return cls(Quota(engine_for(database_url), catalog, **quota_kwargs))

    def check(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
              steps=None):
        return self.quota.check(customer, charge or meter, quantity, model=model, task=task, tokens=tokens,
                                cost=cost, steps=steps).to_json()

    def reserve(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
                steps=None, ttl=60.0, request_id=None):
        return self.quota.reserve(customer, charge or meter, quantity, ttl=ttl, request_id=request_id, model=model,
                                  task=task, tokens=tokens, cost=cost, steps=steps).to_json()

    def commit(self, reservation_id, event=None):
        return self.quota.commit(reservation_id, event)

    def release(self, reservation_id):
        return self.quota.release(reservation_id)

    def record(self, events):
        events = list(events)
        result = self.quota.ledger.record(events)
        out = result.to_json()
        out.pop("errors", None)
        out["results"] = [r.to_json() for r in result.results]
        return out

    def usage(self, customer):
        return self.quota.usage(customer)


class HttpClient(BillingClient):
    """Over HTTP with httpx (keeps one connection pool; use as a context manager or close())."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, client=None, transport=None):
        import httpx

        self._http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                            headers={"Authorization": f"Bearer {api_key}"})
        if client is not None:
            self._http.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._http.request(method, path, json=body)
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            if isinstance(data, dict) and "code" in data:
                raise ApiError(data.get("message", ""), code=data["code"], status=response.status_code,
                               details=data.get("details"))
            raise ApiError(response.text[:500] or response.reason_phrase, code=f"http_{response.status_code}",
                           status=response.status_code)
        return data

    def check(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
              steps=None):
        return self._call("POST", "/v1/quota/check",
                          _quota_body(customer, meter, charge, quantity, model, task, tokens, cost, steps))

    def reserve(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
                steps=None, ttl=60.0, request_id=None):
        body = _quota_body(customer, meter, charge, quantity, model, task, tokens, cost, steps)
        body["ttl_seconds"] = ttl
        if request_id is not None:
            body["request_id"] = request_id
        return self._call("POST", "/v1/quota/reserve", body)

    def commit(self, reservation_id, event=None):
        return self._call("POST", "/v1/quota/commit", {"reservation_id": reservation_id, "event": event})

    def release(self, reservation_id):
        return self._call("POST", "/v1/quota/release", {"reservation_id": reservation_id})

    def record(self, events):
        return self._call("POST", "/v1/events", {"events": list(events)})

    def usage(self, customer):
        return self._call("GET", f"/v1/customers/{customer}/usage")


# ---------------------------------------------------------------- usage blocks

def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def extract_usage(response: Any) -> dict[str, int]:
    """Token counts of an LLM response as event properties (``input_tokens`` = NON-cached
    input, ``output_tokens``, ``cache_read_tokens``, ``cache_write_tokens``).

    Reads ``response.usage`` (attribute or key; or the usage block itself):
    OpenAI chat: ``prompt_tokens`` (includes cached), ``completion_tokens`` (includes
    reasoning), ``prompt_tokens_details.cached_tokens``,
    ``completion_tokens_details.reasoning_tokens``; OpenAI responses: ``input_tokens``
    (includes cached), ``output_tokens`` (includes reasoning),
    ``input_tokens_details.cached_tokens``, ``output_tokens_details.reasoning_tokens``;
    reasoning is reported apart as ``reasoning_tokens``; Anthropic:
    ``input_tokens`` (excludes cache), ``output_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``. Missing usage: ``{}``."""
    usage = _get(response, "usage")
    if usage is None and any(_get(response, k) is not None for k in ("prompt_tokens", "input_tokens")):
        usage = response
    if usage is None:
        return {}
    out: dict[str, int] = {}
    prompt = _int(_get(usage, "prompt_tokens"))
    if prompt is not None:  # OpenAI chat completions
        cached = _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens")) or 0
        out["input_tokens"] = max(0, prompt - cached)
        if cached:
            out["cache_read_tokens"] = cached
        _output(out, _int(_get(usage, "completion_tokens")) or 0,
                _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens")))
        return out
    inp = _int(_get(usage, "input_tokens"))
    details = _get(usage, "input_tokens_details")
    if details is not None:  # OpenAI responses API: input includes cached
        cached = _int(_get(details, "cached_tokens")) or 0
        out["input_tokens"] = max(0, (inp or 0) - cached)
        if cached:
            out["cache_read_tokens"] = cached
    elif inp is not None:  # Anthropic: input excludes cache reads and writes
        out["input_tokens"] = inp
        read = _int(_get(usage, "cache_read_input_tokens"))
        write = _int(_get(usage, "cache_creation_input_tokens"))
        if read:
            out["cache_read_tokens"] = read
        if write:
            out["cache_write_tokens"] = write
    output = _int(_get(usage, "output_tokens"))
    if output is not None:
        _output(out, output, _int(_get(_get(usage, "output_tokens_details"), "reasoning_tokens")))
    return out


def _output(out: dict[str, int], output: int, reasoning: int | None) -> None:
    """OpenAI counts reasoning inside the output tokens: split them out (``reasoning_tokens``
    is priced at the model's reasoning price, which defaults to its output price), so no
    token is counted twice."""
    if reasoning:
        reasoning = min(reasoning, output)
        out["output_tokens"] = output - reasoning
        out["reasoning_tokens"] = reasoning
    else:
        out["output_tokens"] = output


@dataclass
class Guarded:
    response: Any
    decision: dict[str, Any]
    reservation_id: str
    model: str | None
    usage: dict[str, int] = field(default_factory=dict)
    commit: dict[str, Any] = field(default_factory=dict)


def guarded_call(client: BillingClient, customer: str, meter: str | None, call: Callable[[str | None], Any], *,
                 charge: str | None = None, quantity: Decimal | int | str = 1, model: str | None = None,
                 task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
                 ttl: float = 120.0, request_id: str | None = None, event_type: str | None = None,
                 event_id: str | None = None, properties: dict[str, Any] | None = None) -> Guarded:
    """reserve -> ``call(model)`` on the granted lane's model -> commit the actual usage.

    The committed event carries ``model`` (the lane's), the token counts read from the
    response's usage block and ``properties``; its type defaults to the meter's event type
    and its id to the reservation id (so a retried commit is a duplicate, never double)."""
    reservation = client.reserve(customer, meter, charge=charge, quantity=quantity, model=model, task=task,
                                 tokens=tokens, cost=cost, ttl=ttl, request_id=request_id)
    decision = reservation["decision"]
    if not reservation.get("granted"):
        raise QuotaDenied(decision)
    rid = reservation["reservation_id"]
    lane_model = (decision.get("lane") or {}).get("model") or model
    try:
        response = call(lane_model)
    except BaseException:
        client.release(rid)
        raise
    usage = extract_usage(response)
    props: dict[str, Any] = dict(properties or {})
    if lane_model is not None:
        props["model"] = lane_model
    props.update(usage)
    event: dict[str, Any] = {"properties": props}
    if event_type is not None:
        event["type"] = event_type
    if event_id is not None:
        event["id"] = event_id
    committed = _commit_with_retries(client, rid, event)
    return Guarded(response, decision, rid, lane_model, usage, committed)


def _commit_with_retries(client: BillingClient, reservation_id: str, event: dict[str, Any], attempts: int = 3,
                         delay: float = 0.2) -> dict[str, Any]:
    """The model call already happened: its usage must be recorded. A commit is idempotent
    (the event id is fixed), so a commit lost to the network or a 5xx is sent again."""
    import time

    import httpx

    for attempt in range(attempts):
        try:
            return client.commit(reservation_id, event)
        except (httpx.TransportError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500 or attempt == attempts - 1:
                raise
            time.sleep(delay * 2 ** attempt)
    raise AssertionError("unreachable")
