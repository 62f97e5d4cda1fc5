"""One flow, two drivers: the client's multi-step procedures (``guarded_call``'s reserve ->
call -> commit, a spool flush) are written once as generators that yield ``Op``s (a call of
a client, spool or caller method) and get each result (or exception) back; ``run`` drives
them with plain calls, ``arun`` in an event loop (awaiting coroutine methods, running
blocking ones such as a database client or a file fsync in a worker thread)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
Flow = Generator["Op", Any, T]


@dataclass
class Op:
    target: str  # "client" | "spool" | "call" (the caller's function)
    method: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    inline: bool = False  # cheap and non-blocking: called directly by ``arun`` too


def client_op(method: str, *args: Any, inline: bool = False, **kwargs: Any) -> Op:
    return Op("client", method, args, kwargs, inline)


def spool_op(method: str, *args: Any, **kwargs: Any) -> Op:
    return Op("spool", method, args, kwargs)


def _target(op: Op, client: Any, call: Callable | None) -> Callable:
    if op.target == "call":
        assert call is not None
        return call
    obj = client if op.target == "client" else client.spool
    return getattr(obj, op.method)


def run(flow: Flow[T], client: Any, call: Callable | None = None) -> T:
    """Drive ``flow`` with plain (blocking) calls."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            value = _target(op, client, call)(*op.args, **op.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which decides
            error = exc


async def arun(flow: Flow[T], client: Any, call: Callable | None = None) -> T:
    """Drive ``flow`` in an event loop: the methods of an async client (``is_async``) and the
    caller's function are called here and their awaitable results awaited; the methods of a
    blocking client and of the spool run in a worker thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        fn = _target(op, client, call)
        try:
            if op.inline or op.target == "call" or (op.target == "client" and getattr(client, "is_async", False)):
                value = fn(*op.args, **op.kwargs)
                if inspect.isawaitable(value):
                    value = await value
            else:
                value = await asyncio.to_thread(fn, *op.args, **op.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, which decides
            error = exc
