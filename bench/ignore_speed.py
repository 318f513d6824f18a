"""Benchmark: `.dockerignore` matching on 100,000 paths, a `*`-first file against a usual one.

Prints, side by side, the seconds of one `excluded_indices` call (median of --runs, a fresh
matcher each time so no folder cache carries over) for:

  usual      `**/__pycache__`, `*.pyc`, `**/.venv`, `.git`, `node_modules`
  star-first `*` then re-includes `!pkg_a/`, `!pkg_b/`, `!services/`, `!infra/`

    python bench/ignore_speed.py [--files 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from build_assets.core.ignore import DockerIgnore

USUAL = "**/__pycache__\n*.pyc\n**/.venv\n.git\nnode_modules\n"
STAR_FIRST = "*\n!pkg_a/\n!pkg_b/\n!services/\n!infra/\n**/__pycache__\n"


def paths(n: int) -> list[str]:
    """A monorepo-shaped sorted path list: 40 top folders, 3 levels, some caches."""
    rng = random.Random(7)
    tops = ["pkg_a", "pkg_b", "services", "infra", *(f"lib_{i}" for i in range(36))]
    out = set()
    while len(out) < n:
        parts = [rng.choice(tops), f"m{rng.randrange(30)}", f"s{rng.randrange(10)}"]
        if rng.random() < 0.05:
            parts.append("__pycache__")
        out.add("/".join(parts) + f"/f{rng.randrange(100)}.py")
    return sorted(out)


def timed(text: str, files: list[str], runs: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(runs):
        ignore = DockerIgnore(text)
        start = time.perf_counter()
        count = len(ignore.excluded_indices(files))
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    files = paths(args.files)
    print(f"{len(files):,} paths, median of {args.runs}")
    print(f"{'ignore file':<12} {'seconds':>8} {'excluded':>9}")
    for name, text in (("usual", USUAL), ("star-first", STAR_FIRST)):
        seconds, count = timed(text, files, args.runs)
        print(f"{name:<12} {seconds:>8.3f} {count:>9,}")


if __name__ == "__main__":
    main()
