"""HTML reports: self-contained pages whose inline SVG charts really draw, checked in
headless Chromium after layout (skipped only when Chromium is missing and CI is unset):
every chart has a size, its data marks are visible and inside it, and the marks match the
data (one point per customer, histogram counts per customer, bar heights proportional to
their values)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from billing.catalog import load_plan_file
from billing.reports.charts import bars_svg, histogram_svg, scatter_svg
from billing.reports.html import margins_html, simulation_html
from billing.reports.margins import margin_report
from billing.reports.stats import histogram
from billing.simulate.core import simulate
from billing.simulate.spec import load_spec, spec_plans
from tests.support.margins import seed_ledger

ROOT = Path(__file__).resolve().parents[2]
SIM_KINDS = {"plans", "histogram", "scatter", "segments"}
MARGIN_KINDS = {"histogram", "scatter", "segments", "plans"}

# Appended to a COPY of the report by the test only (the report itself has no script):
# measures every chart and its data marks after layout and writes the result into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const out = [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll('.mark')].map(el => {
      const b = el.getBoundingClientRect(), st = getComputedStyle(el);
      return {tag: el.tagName, series: el.dataset.series || '', value: el.dataset.value || null,
              w: b.width, h: b.height,
              inside: b.left >= box.left - 0.5 && b.right <= box.right + 0.5 &&
                      b.top >= box.top - 0.5 && b.bottom <= box.bottom + 0.5,
              visible: st.visibility !== 'hidden' && st.display !== 'none' && st.fill !== 'none' &&
                       parseFloat(st.opacity) > 0};
    });
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


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    lowered = html.lower()
    assert "<script" not in lowered and "<link" not in lowered and " src=" not in lowered
    assert "https://" not in lowered and "url(" not in lowered and "@import" not in lowered
    assert set(re.findall(r'http://[^"\s]+', html)) <= {"http://www.w3.org/2000/svg"}  # namespace, not a fetch


def assert_drawn(chart: dict) -> None:
    """The chart has a size and at least one visible data mark of positive area inside it."""
    assert chart["width"] > 300 and chart["height"] > 200, chart["kind"]
    drawn = [m for m in chart["marks"] if m["visible"] and m["inside"] and m["w"] > 0 and m["h"] > 0]
    assert drawn, f"{chart['kind']}: no visible data mark"
    assert all(m["inside"] for m in chart["marks"]), f"{chart['kind']}: a mark outside its chart"


def assert_bars_proportional(chart: dict) -> None:
    """Bar heights scale with |value| (one pixel of tolerance for the rounding of coordinates)."""
    bars = [(abs(float(m["value"])), m["h"]) for m in chart["marks"] if m["value"] is not None]
    top_value, top_h = max(bars)
    assert top_h > 20, chart["kind"]
    for value, h in bars:
        assert abs(h - top_h * value / top_value) <= 1.5, (chart["kind"], value, h)


@pytest.fixture(scope="module")
def sim():
    path = ROOT / "examples" / "margin-trap.yaml"
    spec = load_spec(path)
    plans = spec_plans(spec, path) + [load_plan_file(ROOT / "examples" / "plans" / "flat-20-capped.yaml")]
    return simulate(plans, spec.customer_inputs(), spec.the_period(), spec.book())


def test_simulation_page_is_self_contained(sim):
    html = simulation_html(sim, "Margin trap")
    assert_self_contained(html)
    kinds = re.findall(r'data-chart="([a-z]+)"', html)
    assert sorted(kinds) == sorted(SIM_KINDS)
    assert "-800.0%" in html and "break-even" in html
    assert html.count('class="mark"') >= 4 * len(sim.plans)  # a point per customer and plan at least


@pytest.mark.browser
def test_simulation_charts_draw_in_headless_chromium(sim, tmp_path):
    charts = {c["kind"]: c for c in render(simulation_html(sim, "Margin trap"), tmp_path)}
    assert set(charts) == SIM_KINDS
    for chart in charts.values():
        assert_drawn(chart)
    customers = len(sim.results[sim.plans[0].ref])
    points = charts["scatter"]["marks"]
    assert len(points) == customers * len(sim.plans) and all(p["tag"] == "circle" for p in points)
    for plan in sim.plans:  # every customer lands in one histogram bin of its plan
        bins = [m for m in charts["histogram"]["marks"] if m["series"] == plan.ref]
        assert sum(int(m["value"]) for m in bins) == customers
        assert all((m["h"] > 0) == (int(m["value"]) > 0) for m in bins)
    assert_bars_proportional(charts["plans"])
    assert_bars_proportional(charts["segments"])


@pytest.fixture(scope="module")
def report(module_engine):  # noqa: F811
    seeded = seed_ledger(module_engine)
    return margin_report(module_engine, seeded["catalog"], "2026-10", as_of=seeded["now"], by="feature", daily=True)


@pytest.mark.browser
def test_margins_page_charts_draw_in_headless_chromium(report, tmp_path):
    html = margins_html(report)
    assert_self_contained(html)
    charts = {c["kind"]: c for c in render(html, tmp_path)}
    assert set(charts) == MARGIN_KINDS | {"breakdown", "daily"}
    for chart in charts.values():
        assert_drawn(chart)
    assert len(charts["scatter"]["marks"]) == len(report.customers)
    hist = charts["histogram"]["marks"]
    counted = sum(1 for c in report.customers if c.margin_pct is not None or c.cost > 0)
    assert sum(int(m["value"]) for m in hist) == counted
    segments = charts["segments"]["marks"]
    assert len(segments) == 3 * len(report.usage_segments())  # revenue, cost and margin of each
    assert_bars_proportional(charts["segments"])
    plans = charts["plans"]["marks"]
    assert len(plans) == 3 * len(report.plans())
    assert_bars_proportional(charts["plans"])
    daily = charts["daily"]["marks"]  # revenue and cost of each day of the period with events
    assert len(daily) == 2 * len(report.daily) and len(report.daily) > 20
    assert_bars_proportional(charts["daily"])
    # the whale (cost above revenue) is drawn below the break-even line: its point is red
    assert "Whales (1)" in html and 'fill="#dc2626"' in html


def test_svg_helpers_handle_empty_and_negative():
    assert "<svg" in histogram_svg(histogram([], [0]), "empty")
    assert "no customers" in scatter_svg([], "none") and "<circle" not in scatter_svg([], "none")
    assert "no data" in bars_svg([], "none")
    svg = bars_svg([("a", [("margin", Decimal(-5))]), ("b", [("margin", Decimal(10))])], "neg")
    assert svg.count('class="mark"') == 2 and "-$5" in svg  # the losing bar below zero, labelled
    log = scatter_svg([(Decimal("0.01"), Decimal(20), "a"), (Decimal(5), Decimal(20), "b"),
                       (Decimal(300), Decimal(60), "c")], "log")
    assert "log scale" in log and ">c</text>" in log  # values over 4 decades: log axes; the loser named


def test_a_large_report_lists_the_lowest_margins_and_says_so():
    from datetime import UTC, datetime

    from billing.reports.margins import CustomerMargin, MarginReport

    customers = [CustomerMargin(f"c{i:05d}", "p@v1", Decimal(20), "invoiced", Decimal(i) / 10, 1, i)
                 for i in range(1200)]
    html = margins_html(MarginReport("2026-10", datetime(2026, 11, 2, tzinfo=UTC), customers))
    assert "Showing the 1,000 customers with the lowest margin of 1,200" in html
    assert "<td>c01199</td>" in html and "<td>c00100</td>" not in html  # the 200 best margins are left out
    assert html.count('class="mark"') >= 1200  # the charts still draw every customer
