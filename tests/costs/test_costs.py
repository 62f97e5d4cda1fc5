"""Cost book: exact per-event provider cost, effective dating, data files, LiteLLM import."""

from __future__ import annotations

import ast
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from billing.costs import (
    CostBook,
    CostBookError,
    ModelPrice,
    UnknownModel,
    cost_breakdown,
    dump_yaml,
    event_cost,
    extra_fields,
    import_litellm,
)
from billing.errors import BillingError, ErrorCode
from billing.events import TOKEN_FIELDS, UsageEvent

D = Decimal
AT = datetime(2026, 10, 3, 12, 0, tzinfo=UTC)
DATA = Path(__file__).resolve().parents[2] / "billing" / "costs" / "data"

SMALL_BOOK = """
provider: test
source: unit test
retrieved: 2026-11-01
models:
  - model: m-3-15
    effective_from: 2025-01-01
    input: "3"
    output: "15"
    cache_read: "0.30"
    cache_write: "3.75"
    batch_discount: "0.5"
    aliases: [m-3-15-20250101]
  - model: versioned
    effective_from: 2025-01-01
    input: "10"
    output: "40"
  - model: versioned
    effective_from: 2025-06-10
    input: "2"
    output: "8"
"""


@pytest.fixture(scope="module")
def book() -> CostBook:
    return CostBook.from_yaml_text(SMALL_BOOK)


def ev(model: str | None = "m-3-15", at: datetime = AT, id: str = "e1", type: str = "llm.call", **props) -> UsageEvent:
    if model is not None:
        props["model"] = model
    return UsageEvent(id=id, customer="acme", type=type, timestamp=at, properties=props)


# -- the support-chatbot figure (DESIGN section 1 / issue) --------------------------------------


def test_chat_message_costs_exactly(book):
    assert event_cost(ev(input_tokens=2100, output_tokens=400), book) == D("0.0123")


@pytest.mark.slow
def test_75k_messages_sum_exactly(book):
    one = event_cost(ev(input_tokens=2100, output_tokens=400), book)
    assert one * 75_000 == D("922.50")
    events = [ev(id=f"e{c}-{m}", input_tokens=2100, output_tokens=400) for c in range(5_000) for m in range(15)]
    assert len(events) == 75_000
    assert sum((event_cost(e, book) for e in events), D(0)) == D("922.50")


def test_default_book_sonnet_gives_same_figure():
    book = CostBook.load_default()
    assert event_cost(ev("claude-sonnet-4-5", input_tokens=2100, output_tokens=400), book) == D("0.0123")


# -- components ---------------------------------------------------------------------------------


def test_cache_read_and_write(book):
    e = ev(input_tokens=100, cache_read_tokens=1_500, cache_write_tokens=2_000, output_tokens=50)
    parts = cost_breakdown(e, book)
    assert parts == {"input": D("0.0003"), "cache_read": D("0.00045"), "cache_write": D("0.0075"),
                     "output": D("0.00075")}
    assert event_cost(e, book) == D("0.009") == sum(parts.values())


def test_batch_discount(book):
    assert event_cost(ev(input_tokens=2100, output_tokens=400, batch=True), book) == D("0.00615")
    assert event_cost(ev(input_tokens=2100, output_tokens=400, batch=False), book) == D("0.0123")
    assert event_cost(ev(input_tokens=2100, output_tokens=400, batch="false"), book) == D("0.0123")


def test_reasoning_defaults_to_output_price(book):
    assert event_cost(ev(reasoning_tokens=1_000_000), book) == D("15")


def test_events_without_tokens_cost_nothing_unless_reported(book):
    assert event_cost(ev(None, type="request"), book) == 0
    assert event_cost(ev(None, type="outcome", feature="support"), book) == 0
    assert event_cost(ev("not-in-book", type="request"), book) == 0  # no tokens, nothing to price
    assert event_cost(ev(None, type="api.call", cost="0.0042"), book) == D("0.0042")
    assert cost_breakdown(ev(None, cost=0.1), book) == {"reported": D("0.1")}


def test_tokens_without_model_raise(book):
    with pytest.raises(UnknownModel, match="no 'model' property") as info:
        event_cost(ev(None, input_tokens=10), book)
    assert info.value.code == ErrorCode.UNKNOWN_MODEL


def test_negative_tokens_rejected(book):
    with pytest.raises(BillingError) as info:
        event_cost(ev(input_tokens=-1), book)
    assert info.value.code == ErrorCode.NEGATIVE_QUANTITY


# -- lookup -------------------------------------------------------------------------------------


def test_effective_dating(book):
    boundary = datetime(2025, 6, 10, tzinfo=UTC)
    assert book.price_for("versioned", boundary - timedelta(microseconds=1)).input == D("10")
    assert book.price_for("versioned", boundary).input == D("2")
    assert book.price_for("versioned", datetime(2030, 1, 1, tzinfo=UTC)).input == D("2")
    # A UTC+2 wall clock just after midnight is still the 9th in UTC.
    from datetime import timezone
    assert book.price_for("versioned", datetime(2025, 6, 10, 1, 0, tzinfo=timezone(timedelta(hours=2)))).input == 10
    with pytest.raises(UnknownModel, match="first price from 2025-01-01") as info:
        book.price_for("versioned", datetime(2024, 12, 31, 23, 59, tzinfo=UTC))
    assert info.value.code == ErrorCode.UNKNOWN_MODEL
    before = ev("versioned", at=boundary - timedelta(seconds=1), output_tokens=1_000_000)
    after = ev("versioned", at=boundary, output_tokens=1_000_000)
    assert (event_cost(before, book), event_cost(after, book)) == (D("40"), D("8"))


def test_default_book_o3_price_cut():
    book = CostBook.load_default()
    assert book.price_for("o3", datetime(2025, 5, 1, tzinfo=UTC)).input == D("10")
    assert book.price_for("o3-2025-04-16", datetime(2025, 7, 1, tzinfo=UTC)).input == D("2")


def test_alias_resolution(book):
    assert book.knows("m-3-15-20250101") and book.knows("m-3-15")
    assert book.price_for("m-3-15-20250101", AT) == book.price_for("m-3-15", AT)
    assert "m-3-15-20250101" not in book.models()
    default = CostBook.load_default()
    assert default.price_for("claude-sonnet-4-5-20250929", AT).model == "claude-sonnet-4-5"


def test_unknown_model(book):
    assert not book.knows("gpt-9")
    with pytest.raises(UnknownModel) as info:
        book.price_for("gpt-9", AT)
    assert info.value.code == ErrorCode.UNKNOWN_MODEL == "unknown_model"
    assert info.value.to_dict()["code"] == "unknown_model"
    with pytest.raises(UnknownModel, match="did you mean m-3-15"):
        event_cost(ev("m-3-16", input_tokens=1), book)


def test_naive_lookup_time_rejected(book):
    with pytest.raises(CostBookError):
        book.price_for("m-3-15", datetime(2026, 1, 1))


def test_defaults_and_validation():
    p = ModelPrice(model="x", provider="p", effective_from=date(2025, 1, 1), input="2", output="8",
                   source="s", retrieved=date(2026, 1, 1))
    assert (p.cache_read, p.cache_write, p.reasoning, p.batch_discount) == (D(2), D(2), D(8), D(0))
    with pytest.raises(ValueError):
        ModelPrice(model="x", provider="p", effective_from=date(2025, 1, 1), input="-1", output="8",
                   source="s", retrieved=date(2026, 1, 1))
    with pytest.raises(CostBookError, match=r"<text>:6: models\[0\]\.batch_discount: .*must be a fraction between 0 and 1 .*\(x\)"):
        CostBook.from_yaml_text(SMALL_BOOK.split("models:")[0] + 'models:\n  - {model: x, effective_from: 2025-01-01,'
                                ' input: "1", output: "2", batch_discount: "1.5"}')


def test_unquoted_yaml_numbers_are_read_from_text():
    book = CostBook.from_yaml_text("provider: p\nsource: s\nretrieved: 2026-11-01\nmodels:\n"
                                   "  - {model: x, effective_from: 2025-01-01, input: 0.1, output: 3}")
    assert book.price_for("x", AT).input == D("0.1")


def test_duplicate_and_alias_conflicts_rejected(book):
    with pytest.raises(CostBookError, match="two prices"):
        CostBook([*book, book.price_for("m-3-15", AT)])
    clash = book.price_for("versioned", AT).model_copy(update={"aliases": ("m-3-15",)})
    with pytest.raises(CostBookError, match="also a model name"):
        CostBook([*book, clash.model_copy(update={"effective_from": date(2026, 1, 1)})])


def test_merged_other_wins(book):
    cheaper = book.price_for("m-3-15", AT).model_copy(update={"input": D("1"), "aliases": ()})
    new = ModelPrice(model="m-3-15-20250101", provider="x", effective_from=date(2025, 1, 1), input="9",
                     output="9", source="s", retrieved=date(2026, 1, 1))
    merged = book.merged(CostBook([cheaper, new]))
    assert merged.price_for("m-3-15", AT).input == D("1")
    assert merged.price_for("m-3-15-20250101", AT).input == D("9")  # now a model of its own
    assert merged.price_for("versioned", AT).input == D("2")
    assert len(merged) == len(book) + 1


# -- properties ---------------------------------------------------------------------------------

DEFAULT = CostBook.load_default()
EVERY_PRICE_IN_FORCE = datetime(2027, 1, 1, tzinfo=UTC)  # after every shipped effective_from
tokens = st.integers(min_value=0, max_value=10**9)
token_dicts = st.fixed_dictionaries({f: tokens for f in TOKEN_FIELDS})


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(DEFAULT.models()), counts=token_dicts, batch=st.booleans())
def test_cost_non_negative(model, counts, batch):
    assert event_cost(ev(model, EVERY_PRICE_IN_FORCE, batch=batch, **counts), DEFAULT) >= 0


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(DEFAULT.models()), a=token_dicts, b=token_dicts, batch=st.booleans())
def test_cost_additive_in_tokens(model, a, b, batch):
    """Additive while the prompts stay under the model's first context threshold (above it the
    whole request moves to other rates: tests/costs/test_price_kinds.py)."""
    both = {f: a[f] + b[f] for f in TOKEN_FIELDS}
    at = EVERY_PRICE_IN_FORCE
    limit = DEFAULT.price_for(model, at).card("batch" if batch else "standard")[0].prompt_limit
    assume(limit is None or sum(both[f] for f in ("input_tokens", "cache_read_tokens", "cache_write_tokens")) <= limit)
    total = event_cost(ev(model, at, batch=batch, **both), DEFAULT)
    assert total == event_cost(ev(model, at, batch=batch, **a), DEFAULT) + event_cost(ev(model, at, batch=batch, **b), DEFAULT)


@settings(max_examples=100, deadline=None)
@given(model=st.sampled_from(DEFAULT.models()), counts=token_dicts, batch=st.booleans(),
       k=st.decimals(min_value=0, max_value=100, places=4))
def test_scaled_multiplies_cost_exactly(model, counts, batch, k):
    event = ev(model, EVERY_PRICE_IN_FORCE, batch=batch, **counts)
    assert event_cost(event, DEFAULT.scaled(k)) == event_cost(event, DEFAULT) * k


# -- LiteLLM import -----------------------------------------------------------------------------

LITELLM_SAMPLE = """{
  "sample_spec": {"max_tokens": "LEGACY parameter", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
                  "litellm_provider": "one of https://docs.litellm.ai/docs/providers", "mode": "one of chat, embedding"},
  "claude-sonnet-4-5-20250929": {"max_input_tokens": 200000, "input_cost_per_token": 3e-06,
      "output_cost_per_token": 1.5e-05, "cache_creation_input_token_cost": 3.75e-06,
      "cache_read_input_token_cost": 3e-07, "input_cost_per_token_batches": 1.5e-06,
      "output_cost_per_token_batches": 7.5e-06, "litellm_provider": "anthropic", "mode": "chat"},
  "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
      "cache_read_input_token_cost": 7.5e-08, "litellm_provider": "openai", "mode": "chat"},
  "o4-mini": {"input_cost_per_token": 1.1e-06, "output_cost_per_token": 4.4e-06,
      "output_cost_per_reasoning_token": 4.4e-06, "litellm_provider": "openai"},
  "text-embedding-3-small": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0,
      "litellm_provider": "openai", "mode": "embedding"},
  "dall-e-3": {"litellm_provider": "openai", "mode": "chat"}
}"""


def test_import_litellm_exact():
    result = import_litellm(LITELLM_SAMPLE, effective_from=date(2026, 1, 1), retrieved=date(2026, 11, 1))
    book = result.book
    assert book.models() == ["claude-sonnet-4-5-20250929", "gpt-4o-mini", "o4-mini"]
    sonnet = book.price_for("claude-sonnet-4-5-20250929", AT)
    assert sonnet.prices() == {"input": 3, "output": 15, "cache_read": D("0.3"), "cache_write": D("3.75"),
                               "reasoning": 15}
    assert sonnet.batch_discount == D("0.5") and sonnet.provider == "anthropic"
    mini = book.price_for("gpt-4o-mini", AT)
    assert (mini.input, mini.output, mini.cache_read, mini.cache_write) == (D("0.15"), D("0.6"), D("0.075"), D("0.15"))
    assert str(mini.input) == "0.15"  # shifted exactly, not 0.15000000000000002
    assert mini.batch_discount == 0 and mini.retrieved == date(2026, 11, 1)
    assert book.price_for("o4-mini", AT).reasoning == D("4.4")
    assert set(result.skipped) == {"sample_spec", "text-embedding-3-small", "dall-e-3"}
    assert "embedding" in result.skipped["text-embedding-3-small"]
    # Same figure as the hand-written book.
    assert event_cost(ev("claude-sonnet-4-5-20250929", input_tokens=2100, output_tokens=400), book) == D("0.0123")


def test_import_litellm_inputs_and_provider_filter(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(LITELLM_SAMPLE)
    expected = import_litellm(LITELLM_SAMPLE, effective_from=date(2026, 1, 1)).book
    assert import_litellm(path, effective_from=date(2026, 1, 1)).book == expected
    assert import_litellm(str(path), effective_from=date(2026, 1, 1)).book == expected
    as_dict = json.loads(LITELLM_SAMPLE)  # plain floats: converted via their shortest repr
    assert import_litellm(as_dict, effective_from=date(2026, 1, 1)).book == expected
    only = import_litellm(LITELLM_SAMPLE, effective_from=date(2026, 1, 1), providers={"openai"})
    assert only.book.models() == ["gpt-4o-mini", "o4-mini"]
    assert "not selected" in only.skipped["claude-sonnet-4-5-20250929"]


def test_dump_yaml_round_trips(book):
    for b in (book, CostBook.load_default(), import_litellm(LITELLM_SAMPLE, effective_from=date(2026, 1, 1)).book,
              CostBook.load_default().scaled(D("0.37"))):
        assert CostBook.from_yaml_text(dump_yaml(b)) == b
    assert "'0.0000000000001'" in dump_yaml(book.scaled(D("1E-14")))  # no exponent notation


# -- shipped data -------------------------------------------------------------------------------


READ_ON = {date(2026, 11, 1), date(2026, 12, 1)}
REAL_LITELLM = Path(__file__).resolve().parent / "data" / "litellm_excerpt.json"


def test_shipped_data_files_are_complete():
    files = sorted(DATA.glob("*.yaml"))
    assert {f.stem for f in files} == {"anthropic", "openai", "google"}
    for path in files:
        doc = yaml.safe_load(path.read_text())  # plain SafeLoader: prices must be quoted strings
        assert doc["source"].startswith("https://") and doc["retrieved"] == date(2026, 11, 1)
        for entry in doc["models"]:  # entries read later carry their own source and date
            assert entry.get("retrieved", doc["retrieved"]) in READ_ON
            assert str(entry.get("source", doc["source"])).startswith("https://")
        assert "200k" in path.read_text()  # each sheet says how it treats prompts over 200k tokens
        for entry in doc["models"]:
            for key in ("input", "output", "cache_read", "cache_write", "reasoning", "batch_discount"):
                assert not isinstance(entry.get(key, doc.get(key, "")), (int, float)), (path.name, entry, key)
    book = CostBook.from_files(files)
    assert book == CostBook.load_default()
    for entry in book:
        assert entry.source and entry.retrieved in READ_ON
        assert entry.provider == {"claude": "anthropic", "gemini": "google"}.get(entry.model.split("-")[0], "openai")
        assert entry.batch_discount == D("0.5") or "batch" in entry.service_tiers
        assert entry.cache_read <= entry.input and entry.output >= entry.input


def test_default_book_spot_prices():
    book = CostBook.load_default()
    expect = {"claude-opus-4-5": ("5", "25", "0.50", "6.25"), "claude-haiku-4-5": ("1", "5", "0.10", "1.25"),
              "gpt-5": ("1.25", "10", "0.125", "1.25"), "gemini-2.5-flash": ("0.30", "2.50", "0.03", "0.30")}
    for model, prices in expect.items():
        p = book.price_for(model, AT)
        assert (p.input, p.output, p.cache_read, p.cache_write) == tuple(map(D, prices))
    assert CostBook.load_default() is book  # cached


def test_costs_package_is_pure():
    forbidden = {"sqlmodel", "sqlalchemy", "fastapi", "stripe", "httpx", "requests", "time"}
    for path in (DATA.parent).glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in forbidden, (path.name, name)
        assert "datetime.now" not in path.read_text() and "date.today" not in path.read_text()


# -- the real LiteLLM format -------------------------------------------------------------------
# tests/costs/data/litellm_excerpt.json: entries copied unchanged from LiteLLM 1.110.2's
# model_prices_and_context_window.json (long-context, flex, priority and 1-hour cache-write
# variants, provider-prefixed keys, non-chat modes, the sample_spec documentation entry), and
# two written in its shape on 2026-12-07 (not copied): claude-sonnet-4-5 (an Anthropic
# long-context tier without a 1-hour rate above 200k) and gemini-1.5-pro (per-image and
# per-audio-second prices, per-character and per-video-second ones the book does not model).


def test_import_the_real_litellm_format():
    result = import_litellm(REAL_LITELLM, effective_from=date(2026, 12, 1))
    book = result.book
    assert set(result.skipped) == {"sample_spec", "text-embedding-3-small", "gpt-4o-mini-tts"}
    opus = book.price_for("claude-opus-4-7", AT.replace(year=2027))
    assert opus.prices() == {"input": D(5), "output": D(25), "cache_read": D("0.5"), "cache_write": D("6.25"),
                             "reasoning": D(25)}
    assert opus.batch_discount == D("0.5") and opus.source.startswith("https://platform.claude.com/")
    assert (opus.cache_write_1h, opus.per_unit) == (D(10), {"web_search_requests": D("0.01")})
    gpt = book.price_for("gpt-5.5", AT.replace(year=2027))
    assert (gpt.input, gpt.output, gpt.cache_read, gpt.cache_write) == (D(5), D(30), D("0.5"), D(5))
    # ..._above_272k_tokens: a context tier; _flex / _priority: service tier cards; uniform _batches: a discount
    [long] = gpt.context_tiers
    assert (long.above, long.input, long.output, long.cache_read) == (272_000, D(10), D(45), D(1))
    assert gpt.batch_discount == D("0.5") and set(gpt.service_tiers) == {"flex", "priority"}
    assert gpt.service_tiers["priority"].rates() == {"input": D("12.5"), "output": D(75), "cache_read": D("1.25"),
                                                     "cache_write": D("12.5"), "cache_write_1h": D("12.5"),
                                                     "reasoning": D(75)}
    assert gpt.service_tiers["flex"].context_tiers[0].input == D(5)
    # what LiteLLM prices and the book cannot say is reported, field by field
    assert "no prices above 272k" in result.notes["gpt-5.5"]
    assert result.unmapped["fedramp_uplift_multiplier"] == ["gpt-5.4-mini", "gpt-5.5"]
    assert result.unmapped["input_cost_per_audio_token"] == ["gemini/gemini-3-flash-preview"]
    assert not any(k.startswith(("input_cost_per_token", "output_cost_per_token", "cache_")) and "audio" not in k
                   for k in result.unmapped)
    # an Anthropic long-context tier: its 1-hour rate, not given, follows its input (2x)
    sonnet = book.price_for("claude-sonnet-4-5", AT.replace(year=2027))
    assert sonnet.context_tiers[0].rates() == {"input": D(6), "output": D("22.5"), "cache_read": D("0.6"),
                                               "cache_write": D("7.5"), "cache_write_1h": D(12), "reasoning": D("22.5")}
    assert "cache_write_1h not given" in result.notes["claude-sonnet-4-5"] and sonnet.batch_discount == D("0.5")
    # per-unit prices; what has no place in the book is reported
    old = book.price_for("gemini-1.5-pro", AT.replace(year=2027))
    assert old.per_unit == {"input_images": D("0.00032875"), "input_audio_seconds": D("0.00003125")}
    for name in ("input_cost_per_image_above_128k_tokens", "input_cost_per_character", "input_cost_per_video_per_second"):
        assert result.unmapped[name] == ["gemini-1.5-pro"]
    # Gemini's batch cache reads are not discounted: an explicit batch card, with its own context tier
    gemini = book.price_for("gemini-3.1-pro-preview", AT.replace(year=2027))
    assert gemini.service_tiers["batch"].cache_read == D("0.2") and gemini.batch_discount == 0
    assert gemini.service_tiers["batch"].context_tiers[0].output == D(9)
    # "gemini/gemini-3.1-pro-preview" also answers to the name events use
    assert book.resolve("gemini-3.1-pro-preview") == "gemini/gemini-3.1-pro-preview"
    assert book.resolve("gemini-3-pro-preview") == "vertex_ai/gemini-3-pro-preview"
    assert book.price_for("gemini-3.1-pro-preview", AT.replace(year=2027)).output == D(12)


def test_shipped_current_models_match_the_real_litellm_prices():
    imported = import_litellm(REAL_LITELLM, effective_from=date(2026, 12, 1)).book
    shipped = CostBook.load_default()
    later = datetime(2027, 1, 1, tzinfo=UTC)
    for model in ("claude-opus-4-7", "claude-sonnet-4-6", "gpt-5.5", "gpt-5.4-mini", "gemini-3.1-pro-preview",
                  "gemini-3-flash-preview", "claude-sonnet-4-5"):
        ours, theirs = shipped.price_for(model, later), imported.price_for(model, later)
        assert (ours.prices(), ours.batch_discount) == (theirs.prices(), theirs.batch_discount), model
        assert extra_fields(ours) == extra_fields(theirs), model  # 1h writes, context/service tiers, per unit
    # a dated snapshot: in force from its date, not before
    assert shipped.price_for("claude-opus-4-7-20260416", datetime(2026, 4, 16, tzinfo=UTC)).model == "claude-opus-4-7"
    with pytest.raises(UnknownModel):
        shipped.price_for("claude-opus-4-7", datetime(2026, 4, 15, tzinfo=UTC))


def test_merging_an_import_adds_versions_of_our_models():
    shipped = CostBook.load_default()
    imported = import_litellm(REAL_LITELLM, effective_from=date(2027, 1, 1)).book
    merged = shipped.merged(imported)
    # the imported "gemini/gemini-3.1-pro-preview" (aliased gemini-3.1-pro-preview) became a
    # second version of our gemini-3.1-pro-preview, reachable by its own name too
    versions = merged.versions("gemini-3.1-pro-preview")
    assert [v.effective_from for v in versions] == [date(2026, 12, 1), date(2027, 1, 1)]
    assert merged.resolve("gemini/gemini-3.1-pro-preview") == "gemini-3.1-pro-preview"
    assert merged.price_for("gpt-5.5", datetime(2026, 10, 1, tzinfo=UTC)).effective_from == date(2026, 4, 23)


def test_cli_import_then_preview_with_the_imported_costs(tmp_path):
    from typer.testing import CliRunner

    from billing.cli import app

    out = tmp_path / "litellm.yaml"
    result = CliRunner().invoke(app, ["costs", "import-litellm", str(REAL_LITELLM), "--effective-from", "2026-10-01",
                                      "--provider", "vertex_ai", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "kept 1 model price(s)" in result.stderr
    assert "&id" not in out.read_text()  # plain YAML, no anchors
    assert CostBook.from_files([out]) == import_litellm(REAL_LITELLM, effective_from=date(2026, 10, 1),
                                                        providers={"vertex_ai"}).book
    # gemini-3-pro-preview is not in the shipped book: preview rejects it, unless given the import
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"id": "e1", "customer": "acme", "type": "llm.call",
                                  "timestamp": "2026-10-02T00:00:00Z",
                                  "properties": {"model": "gemini-3-pro-preview", "input_tokens": 1_000_000}}) + "\n")
    plan = Path(__file__).resolve().parents[2] / "plans" / "token-api.yaml"
    args = ["invoice", "preview", "--plan", str(plan), "--events", str(events), "--json"]
    rejected = CliRunner().invoke(app, args)
    # under --json the error is the API's body, on stdout
    assert rejected.exit_code == 2 and json.loads(rejected.stdout)["error"]["code"] == "unknown_model"
    doc = json.loads(CliRunner().invoke(app, [*args, "--costs", str(out)]).stdout)
    assert doc["provider_cost"] == "4"  # a 1M-token prompt is over 200k: all of it at the >200k rate, $4 per 1M
    listed = CliRunner().invoke(app, ["costs", "list", "--json", "--at", "2026-10-05", "--costs", str(out)])
    rows = {r["model"]: r for r in json.loads(listed.stdout)}
    assert rows["vertex_ai/gemini-3-pro-preview"]["input"] == "2" and "gpt-5.5" in rows
    assert rows["vertex_ai/gemini-3-pro-preview"]["more"]["context_tiers"][0]["above"] == 200_000
    assert "gpt-5.6" not in rows  # not in force yet on that date
