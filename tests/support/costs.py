"""The README's cost-book worked example: a batch claude-sonnet-4-5 call with a 220k-token
prompt, 1-hour cache writes and three web searches ($0.762; tests/costs/test_price_kinds.py
and tests/ledger/test_costbook_worked_example.py compute it)."""

WORKED_EXAMPLE = {"model": "claude-sonnet-4-5", "service_tier": "batch", "input_tokens": 150_000,
                  "cache_read_tokens": 40_000, "cache_write_tokens": 30_000, "cache_write_1h_tokens": 20_000,
                  "output_tokens": 8_000, "reasoning_tokens": 2_000, "web_search_requests": 3}
