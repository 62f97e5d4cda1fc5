"""guarded_call and guarded_stream around an LLM call, in-process, without a network.

    python examples/guarded_call.py

Creates a SQLite ledger in a temporary directory, subscribes a customer to
plans/support-chatbot.yaml, then wraps two calls: ``fake_openai`` returns what
``openai.OpenAI().chat.completions.create(...)`` returns (as a dict here), ``fake_anthropic``
yields the events of ``anthropic.Anthropic().messages.create(..., stream=True)``. With the real
SDKs, pass ``lambda model: client.chat.completions.create(model=model, messages=...)``.
Over HTTP, use ``HttpClient("http://127.0.0.1:8000", api_key)`` instead of ``LocalClient``.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from billing.catalog import Catalog
from billing.client import LocalClient, guarded_call, guarded_stream
from billing.ledger.accounts import Accounts
from billing.store.db import engine_for, upgrade
from billing.reservations.holds import Quota

PLANS = Path(__file__).resolve().parent.parent / "plans"


def fake_openai(model: str | None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model or "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                      "prompt_tokens_details": {"cached_tokens": 1000}}}


def fake_anthropic(model: str | None):
    usage = {"input_tokens": 50, "output_tokens": 1, "cache_read_input_tokens": 2000,
             "cache_creation_input_tokens": 0}
    yield {"type": "message_start", "message": {"model": model, "usage": usage}}
    yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
    yield {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 400}}
    yield {"type": "message_stop"}


def main() -> None:
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'example.db'}"
    upgrade(url)
    engine, catalog = engine_for(url), Catalog.from_paths(PLANS)
    accounts = Accounts(engine, catalog)
    accounts.create_customer("acme", now=datetime(2026, 1, 1, tzinfo=UTC))
    accounts.subscribe("acme", "support-chatbot", at=datetime(2026, 1, 1, tzinfo=UTC))
    client = LocalClient(Quota(engine, catalog))

    # the model is read from the response when not given
    result = guarded_call(client, "acme", "messages", fake_openai, properties={"feature": "support-chat"})
    print("openai:", result.model, result.usage, "recorded" if result.recorded else "NOT recorded")

    stream = guarded_stream(client, "acme", "messages", fake_anthropic, model="claude-sonnet-4-5",
                            properties={"feature": "support-chat"})
    text = "".join(e["delta"]["text"] for e in stream if e["type"] == "content_block_delta")
    print("anthropic stream:", text, stream.result.usage)

    meter = client.usage("acme")["meters"]["messages"]
    print(f"messages used: {meter['used']}, provider cost: ${meter['provider_cost']}")


if __name__ == "__main__":
    main()
