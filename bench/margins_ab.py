"""A/B of ``billing report margins --period 2026-10 --json`` between two source trees on one
database, alternated (A B, B A, ...), beside the floor of ``bench/scale.py`` (``sqlite3`` /
``psql``: GROUP BY customer over ``usage_rollup``) in each round. Prints one JSON object:
every run's wall and CPU seconds (user + system of the child process: the load-robust figure
on a busy machine; on PostgreSQL the scans are the server's and not in it) and the medians.

    git archive main | tar -x -C /tmp/main-tree
    python bench/margins_ab.py sqlite:///DIR/scale-1000000-10000.db --base /tmp/main-tree --rounds 3 [--extra --by feature]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOOR = "SELECT customer_id, SUM(events), SUM(cost_pico) FROM usage_rollup GROUP BY customer_id"


def run(argv: list[str], env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(wall, 2), round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--base", required=True, help="the other source tree (A); B is this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="the rest: more arguments of `report margins` (--extra --by feature)")
    args = parser.parse_args()
    trees = {"base": os.path.abspath(args.base), "this": ROOT}
    if args.url.startswith("sqlite"):
        floor = ["sqlite3", args.url.split("sqlite:///", 1)[1], FLOOR]
    else:
        plain = args.url.replace("postgresql+psycopg", "postgresql")
        floor = ["psql", "-X", "-q", "-o", "/dev/null", plain, "-c", FLOOR]
    runs: dict[str, list] = {"base": [], "this": [], "floor": []}
    for r in range(args.rounds):
        for name in (("base", "this") if r % 2 == 0 else ("this", "base")):
            env = dict(os.environ, PYTHONPATH=trees[name], BILLING_DATABASE_URL=args.url,
                       BILLING_PLANS_DIR=os.path.join(ROOT, "plans"))
            argv = [sys.executable, "-m", "billing", "report", "margins", "--period", "2026-10", *args.extra, "--json"]
            runs[name].append(run(argv, env))
        runs["floor"].append(run(floor, dict(os.environ)))
        print(json.dumps({"round": r, **{k: v[-1] for k, v in runs.items()}}), file=sys.stderr, flush=True)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    summary = {k: {"wall": median([w for w, _ in v]), "cpu": median([c for _, c in v])} for k, v in runs.items()}
    ratios = {k: round(summary[k]["wall"] / max(0.01, summary["floor"]["wall"]), 2) for k in ("base", "this")}
    print(json.dumps({"url": args.url, "extra": args.extra, "rounds": args.rounds, "runs": runs, "median": summary,
                      "wall_over_floor": ratios, "load": [round(x, 1) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
