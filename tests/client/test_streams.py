"""guarded_stream / async_guarded_stream: the chunks pass through, the usage of the final
chunk (or of Anthropic's start and delta events) is committed when the stream ends; a
stream that fails or is closed before any usage releases its holds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from billing.api.auth import create_key
from billing.client import AsyncHttpClient, QuotaDenied, async_guarded_stream, guarded_stream
from tests.support.client import make_env
from tests.support.sdk_shapes import anthropic_events, obj, openai_chat_chunks, openai_response_events


def test_openai_chat_stream_commits_the_final_chunks_usage(env):
    chunks = [obj(c) for c in openai_chat_chunks()]
    stream = guarded_stream(env.client, "tok", "llm_calls", lambda model: iter(chunks), task="job-1")
    seen = []
    for chunk in stream:
        seen.append(chunk)
        assert stream.result is None  # settled only when the stream ends
    assert seen == chunks and stream.result.recorded
    assert stream.result.usage == {"input_tokens": 300, "cache_read_tokens": 600, "output_tokens": 120,
                                   "service_tier": "default"}
    (event,) = env.events("tok")
    assert event["properties"]["model"] == "gpt-4o-2024-08-06" and event["properties"]["task"] == "job-1"
    assert env.used("tok", "input_tokens") == "300" and env.used("tok", "llm_calls") == "1"


def test_anthropic_and_responses_streams(env):
    with guarded_stream(env.client, "split", "requests", lambda model: iter(anthropic_events())) as stream:
        assert len(list(stream)) == 6
    assert [e["type"] for e in stream.result.events] == ["request", "llm.call"]
    assert env.used("split", "output_tokens") == "400" and env.used("split", "searches") == "3"
    responses = guarded_stream(env.client, "tok", "llm_calls", lambda model: iter(openai_response_events(model="gpt-4o")))
    list(responses)
    assert responses.result.usage["input_tokens"] == 500 and env.used("tok", "input_tokens") == "500"


def _failing(events, after):
    for i, event in enumerate(events):
        if i == after:
            raise ConnectionError("the provider hung up")
        yield event


def test_a_stream_failing_before_any_usage_releases_its_holds(env):
    stream = guarded_stream(env.client, "split", "requests", lambda model: _failing(openai_chat_chunks(), 1))
    with pytest.raises(ConnectionError):
        list(stream)
    assert stream.result is None and env.holds("split") == ["released", "released"] and env.events("split") == []


def test_a_stream_failing_after_usage_commits_what_it_saw(env):
    stream = guarded_stream(env.client, "split", "requests", lambda model: _failing(anthropic_events(), 3))
    with pytest.raises(ConnectionError):
        list(stream)
    assert stream.result.recorded and stream.result.usage["input_tokens"] == 50
    assert env.used("split", "input_tokens") == "50" and env.used("split", "output_tokens") == "1"


def test_a_stream_closed_early(env):
    with guarded_stream(env.client, "split", "requests", lambda model: iter(openai_chat_chunks())) as stream:
        next(stream)  # leaves before the usage chunk
    assert stream.result is None and env.holds("split") == ["released", "released"]
    with guarded_stream(env.client, "split", "requests", lambda model: iter(anthropic_events())) as stream:
        next(stream)  # message_start: the input is known
    assert stream.result.recorded and env.used("split", "input_tokens") == "50"


class Manager:
    """Like the SDKs' ``.stream(...)``: a context manager whose ``__enter__`` gives the events."""

    def __init__(self, events):
        self.events, self.exited = events, None

    def __enter__(self):
        return iter(self.events)

    def __exit__(self, *exc):
        self.exited = exc
        return False


def test_stream_managers_are_entered_and_exited(env):
    manager = Manager(anthropic_events())
    stream = guarded_stream(env.client, "split", "requests", lambda model: manager)
    list(stream)
    assert manager.exited == (None, None, None) and stream.result.recorded


def test_a_stream_without_usage_is_recorded_with_a_warning(env):
    stream = guarded_stream(env.client, "bot", "messages", lambda model: iter(openai_chat_chunks(with_usage=False)),
                            properties={"feature": "support-chat"})
    list(stream)
    assert stream.result.recorded and stream.result.usage == {}
    assert stream.result.warnings[-1]["code"] == "no_usage" and env.used("bot", "messages") == "1"


def test_a_denied_stream_never_starts(env):
    for _ in range(3):
        list(guarded_stream(env.client, "split", "requests", lambda model: iter(anthropic_events())))
    with pytest.raises(QuotaDenied):
        guarded_stream(env.client, "split", "requests", lambda model: pytest.fail("must not be called"))


def test_async_streams(sqlite_engine, tmp_path):
    base = make_env("http", sqlite_engine, tmp_path)
    _, key = create_key(sqlite_engine, "admin")

    async def agen(events, fail_after=None):
        for i, event in enumerate(events):
            if i == fail_after:
                raise ConnectionError("hung up")
            await asyncio.sleep(0)
            yield event

    async def main():
        async with AsyncHttpClient("http://testserver", key, transport=httpx.ASGITransport(app=base.app),
                                   spool_dir=tmp_path / "aspool", clock=base.clock) as client:
            async def create(model):  # like AsyncOpenAI: an awaitable that gives the stream
                return agen([obj(c) for c in openai_chat_chunks()])

            stream = await async_guarded_stream(client, "tok", "llm_calls", create)
            chunks = [c async for c in stream]
            failing = await async_guarded_stream(client, "split", "requests",
                                                 lambda model: agen(openai_chat_chunks(), fail_after=1))
            with pytest.raises(ConnectionError):
                async for _ in failing:
                    pass
            async with await async_guarded_stream(client, "split", "requests",
                                                  lambda model: agen(anthropic_events())) as early:
                await early.__anext__()
            return stream, chunks, failing, early

    stream, chunks, failing, early = asyncio.run(main())
    assert len(chunks) == 3 and stream.result.recorded and base.used("tok", "input_tokens") == "300"
    assert failing.result is None
    assert early.result.recorded and base.used("split", "input_tokens") == "50"
    assert sorted(base.holds("split")) == ["committed", "committed", "released", "released"]


class SdkStream:
    """Like ``openai.Stream``: iterable, and ``close()`` closes the HTTP response."""

    def __init__(self, chunks):
        self.chunks, self.closed = chunks, False

    def __iter__(self):
        yield from self.chunks

    def close(self):
        self.closed = True


def test_closing_early_closes_the_sdk_stream(env):
    source = SdkStream(openai_chat_chunks())
    with guarded_stream(env.client, "split", "requests", lambda model: source) as stream:
        next(stream)
    assert source.closed and stream.result is None
