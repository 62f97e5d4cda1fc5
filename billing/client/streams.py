"""Streaming forms of ``guarded_call``: reserve, start the stream, pass its chunks through,
and commit when it ends with the usage the chunks carried (``billing.client.usage.StreamUsage``:
OpenAI's final ``include_usage`` chunk, the Responses ``response.completed`` event,
Anthropic's ``message_start`` + ``message_delta``).

::

    stream = guarded_stream(client, "acme", "messages", lambda model: openai.chat.completions.create(
        model=model, messages=..., stream=True, stream_options={"include_usage": True}))
    for chunk in stream:
        ...
    stream.result.usage          # a Guarded, once the stream ended

The reservation is made (and ``QuotaDenied`` / ``UsageRefused`` raised) before the call;
``call(model)`` may return an iterable of chunks or a stream manager (a context manager
such as the SDKs' ``.stream(...)``, entered here). If the stream raises, or is closed
before its end, the usage seen so far is committed; with none seen yet, the holds are
released. Use the stream as a context manager (or close it) so an abandoned stream is
settled at once, not when its hold expires.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from billing.client.guarded import CallSpec, Guarded, Session, abort_flow, begin_flow, finish_flow
from billing.client.ops import arun, run
from billing.client.usage import StreamUsage


class _Settling:
    """What both stream wrappers share: the session, the usage so far, the outcome."""

    def __init__(self, client: Any, session: Session, manager: Any):
        self._client = client
        self._session = session
        self._manager = manager  # a stream manager entered here, exited at the end
        self.usage = StreamUsage()
        self.result: Guarded | None = None
        self.done = False
        self._failed = False

    @property
    def decision(self) -> dict[str, Any]:
        return self._session.decision

    @property
    def model(self) -> str | None:
        return self._session.model

    def _settle_flow(self):
        self.done = True
        if not self.usage.seen and self._failed:
            return abort_flow(self._session)
        return finish_flow(self._session, None, self.usage.usage(), self.usage.model)


class GuardedStream(_Settling):
    """An iterator over the chunks of a guarded streamed call (see the module docstring)."""

    def __init__(self, client: Any, session: Session, chunks: Any, manager: Any = None):
        super().__init__(client, session, manager)
        self._source = chunks  # an SDK stream: closing it closes its HTTP response
        self._it = iter(chunks)

    def __iter__(self) -> "GuardedStream":
        return self

    def __next__(self) -> Any:
        if self.done:
            raise StopIteration
        try:
            chunk = next(self._it)
        except StopIteration:
            self._settle(None)
            raise
        except BaseException as exc:
            self._settle(exc)
            raise
        self.usage.feed(chunk)
        return chunk

    def _settle(self, exc: BaseException | None) -> None:
        self._failed = exc is not None
        try:
            if self._manager is not None:
                self._manager.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        finally:
            outcome = run(self._settle_flow(), self._client)
            if isinstance(outcome, Guarded):
                self.result = outcome

    def close(self) -> None:
        """Stop reading: close the underlying stream and settle (commit what was seen)."""
        if self.done:
            return
        closer = getattr(self._source, "close", None) or getattr(self._it, "close", None)
        if callable(closer):
            try:
                closer()
            except Exception:  # noqa: BLE001 - settling matters more than a failed close
                pass
        self._settle(GeneratorExit("stream closed before its end"))

    def __enter__(self) -> "GuardedStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncGuardedStream(_Settling):
    """``GuardedStream`` for async iterators (``async for``; ``aclose()``; ``async with``)."""

    def __init__(self, client: Any, session: Session, chunks: Any, manager: Any = None):
        super().__init__(client, session, manager)
        self._source = chunks
        self._it = chunks.__aiter__()

    def __aiter__(self) -> "AsyncGuardedStream":
        return self

    async def __anext__(self) -> Any:
        if self.done:
            raise StopAsyncIteration
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            await self._settle(None)
            raise
        except BaseException as exc:
            await self._settle(exc)
            raise
        self.usage.feed(chunk)
        return chunk

    async def _settle(self, exc: BaseException | None) -> None:
        self._failed = exc is not None
        try:
            if self._manager is not None:
                await self._manager.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        finally:
            outcome = await arun(self._settle_flow(), self._client)
            if isinstance(outcome, Guarded):
                self.result = outcome

    async def aclose(self) -> None:
        if self.done:
            return
        closer = next((c for c in (getattr(self._source, "aclose", None), getattr(self._source, "close", None),
                                   getattr(self._it, "aclose", None)) if callable(c)), None)
        if callable(closer):
            try:
                value = closer()
                if inspect.isawaitable(value):
                    await value
            except Exception:  # noqa: BLE001
                pass
        await self._settle(GeneratorExit("stream closed before its end"))

    async def __aenter__(self) -> "AsyncGuardedStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def guarded_stream(client: Any, customer: str, meter: str | None, call: Callable[[str | None], Any], *,
                   charge: str | None = None, quantity: Decimal | int | str = 1, model: str | None = None,
                   task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
                   steps: int | None = None, ttl: float = 120.0, request_id: str | None = None,
                   event_type: str | None = None, event_id: str | None = None,
                   properties: dict[str, Any] | None = None, allow_unpriced: bool = False,
                   allow_unmetered: bool = False) -> GuardedStream:
    """``guarded_call`` for a streamed call (the same arguments): returns the stream."""
    spec = CallSpec(customer, meter, charge, quantity, model, task, tokens, cost, steps, ttl, request_id,
                    event_type, event_id, properties, allow_unpriced, allow_unmetered)
    session = run(begin_flow(spec), client)
    manager = None
    try:
        chunks = call(session.model)
        if not hasattr(chunks, "__iter__") and hasattr(chunks, "__enter__"):
            manager, chunks = chunks, chunks.__enter__()
        return GuardedStream(client, session, chunks, manager)
    except BaseException:
        run(abort_flow(session), client)
        raise


async def async_guarded_stream(client: Any, customer: str, meter: str | None, call: Callable[[str | None], Any], *,
                               charge: str | None = None, quantity: Decimal | int | str = 1,
                               model: str | None = None, task: str | None = None, tokens: int | None = None,
                               cost: Decimal | int | str = 0, steps: int | None = None, ttl: float = 120.0,
                               request_id: str | None = None, event_type: str | None = None,
                               event_id: str | None = None, properties: dict[str, Any] | None = None,
                               allow_unpriced: bool = False, allow_unmetered: bool = False) -> AsyncGuardedStream:
    """``guarded_stream`` in an event loop: ``call(model)`` may return (an awaitable of) an
    async iterable of chunks or an async stream manager."""
    spec = CallSpec(customer, meter, charge, quantity, model, task, tokens, cost, steps, ttl, request_id,
                    event_type, event_id, properties, allow_unpriced, allow_unmetered)
    session = await arun(begin_flow(spec), client)
    manager = None
    try:
        chunks = call(session.model)
        if inspect.isawaitable(chunks) and not hasattr(chunks, "__aiter__"):
            chunks = await chunks
        if not hasattr(chunks, "__aiter__") and hasattr(chunks, "__aenter__"):
            manager, chunks = chunks, await chunks.__aenter__()
        return AsyncGuardedStream(client, session, chunks, manager)
    except BaseException:
        await arun(abort_flow(session), client)
        raise
