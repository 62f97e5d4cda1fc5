"""examples/guarded_call.py runs and prints what the README says it does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.client import ROOT, child_env


@pytest.mark.slow
def test_the_example_runs():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "guarded_call.py")], env=child_env(),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == ("openai: gpt-4o-2024-08-06 {'input_tokens': 200, 'cache_read_tokens': 1000, "
                        "'output_tokens': 300} recorded")
    assert lines[1] == "anthropic stream: Hi {'input_tokens': 50, 'cache_read_tokens': 2000, 'output_tokens': 400}"
    # 200 x 2.50 + 1000 x 1.25 + 300 x 10 (gpt-4o) + 50 x 3 + 2000 x 0.30 + 400 x 15 (sonnet), per 1M tokens
    assert lines[2] == "messages used: 2, provider cost: $0.0115"
