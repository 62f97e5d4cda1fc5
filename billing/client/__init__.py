"""Python client: one interface in-process (``LocalClient``) and over HTTP (``HttpClient``,
``AsyncHttpClient``), and ``guarded_call`` (with ``async_guarded_call``, ``guarded_stream``
and ``async_guarded_stream``), which wraps an LLM call in reserve -> call -> commit.

The clients return the HTTP API's JSON shapes (plain dicts) and raise
``billing.errors.BillingError`` (``ApiError`` over HTTP) with the same stable codes::

    client = HttpClient("http://localhost:8000", api_key="bk_...")
    # or: client = LocalClient.open("sqlite:///billing.db", "plans")
    result = guarded_call(client, "acme", "messages", lambda model: llm.chat(model=model, ...),
                          model="claude-sonnet-4-5", properties={"feature": "support-chat"})
    result.response, result.decision["lane"], result.usage

Modules: ``usage`` (reading the SDKs' responses), ``calls`` (which events one call
produces), ``guarded`` and ``streams`` (the wrappers), ``spool`` (commits kept on disk until
acknowledged), ``http`` / ``local`` (the clients), ``retry``, ``ops`` (one flow, two drivers).
"""

from billing.client.base import BillingClient
from billing.client.errors import ApiError, QuotaDenied, UsageRefused
from billing.client.guarded import Guarded, async_guarded_call, guarded_call
from billing.client.http import AsyncHttpClient, HttpClient
from billing.client.local import LocalClient
from billing.client.retry import RetryPolicy
from billing.client.spool import Spool
from billing.client.streams import AsyncGuardedStream, GuardedStream, async_guarded_stream, guarded_stream
from billing.client.usage import StreamUsage, extract_usage, model_of

__all__ = [
    "ApiError", "AsyncGuardedStream", "AsyncHttpClient", "BillingClient", "Guarded", "GuardedStream", "HttpClient",
    "LocalClient", "QuotaDenied", "RetryPolicy", "Spool", "StreamUsage", "UsageRefused", "async_guarded_call",
    "async_guarded_stream", "extract_usage", "guarded_call", "guarded_stream", "model_of",
]
