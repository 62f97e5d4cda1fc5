"""HTML reports: self-contained pages whose inline SVG charts really draw, checked in
headless Chromium (skipped only when Chromium is missing and CI is unset)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from billing.catalog import load_plan_file
from billing.reports.html import bars_svg, histogram_svg, scatter_svg, simulation_html
from billing.reports.stats import histogram
from billing.simulate.core import simulate
from billing.simulate.spec import load_spec, spec_plans

ROOT = Path(__file__).resolve().parent.parent
CHART_KINDS = {"plans", "histogram", "scatter", "segments"}

# Appended to a COPY of the report by the test only (the report itself has no script):
# measures every chart and its marks after layout and writes the result into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const out = [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll('rect, circle, line')].filter(el => {
      const b = el.getBBox(); return (b.width > 0 || b.height > 0);
    }).length;
    return {kind: svg.dataset.chart, width: box.width, height: box.height, marks: marks};
  });
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    if os.environ.get("CI"):
        pytest.fail("Chromium is required in CI to check the HTML charts (apt-get install chromium)", pytrace=False)
    pytest.skip("Chromium is not installed (set CI to make this a failure)")


def render(html: str, tmp_path: Path) -> list[dict]:
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / "profile"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--window-size=1200,2000", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe output from Chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def sim():
    path = ROOT / "examples" / "margin-trap.yaml"
    spec = load_spec(path)
    plans = spec_plans(spec, path) + [load_plan_file(ROOT / "examples" / "plans" / "flat-20-capped.yaml")]
    return simulate(plans, spec.customer_inputs(), spec.the_period(), spec.book())


def test_simulation_page_is_self_contained(sim):
    html = simulation_html(sim, "Margin trap")
    assert html.startswith("<!DOCTYPE html>")
    lowered = html.lower()
    assert "<script" not in lowered and "<link" not in lowered and " src=" not in lowered
    assert "https://" not in lowered
    assert set(re.findall(r'http://[^"\s]+', html)) <= {"http://www.w3.org/2000/svg"}  # namespace, not a fetch
    kinds = re.findall(r'data-chart="([a-z]+)"', html)
    assert set(kinds) == CHART_KINDS and kinds.count("histogram") == 2
    assert "-800.0%" in html and "break-even" in html


def test_charts_draw_in_headless_chromium(sim, tmp_path):
    charts = render(simulation_html(sim, "Margin trap"), tmp_path)
    assert {c["kind"] for c in charts} == CHART_KINDS
    assert len(charts) == 1 + 3 * len(sim.plans)
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100, chart
        assert chart["marks"] >= 3, chart


def test_svg_helpers_handle_empty_and_negative():
    assert "<svg" in histogram_svg(histogram([], [0]), "empty")
    assert "<circle" not in scatter_svg([], "none")
    svg = bars_svg([("a", [("margin", -5)]), ("b", [("margin", 10)])], "neg")
    assert svg.count("<rect") >= 3  # legend + two bars
