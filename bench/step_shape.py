"""One Dagster step with our scheduler vs one Dagster step per image, side by side.

Both variants build the same simulated cascade (every build sleeps its duration, nothing is
pushed) and run through the same command, `dagster asset materialize --select '*'`, on a
fresh SQLite instance each:

- one step: build_assets' multi-asset (in-process executor, many builds in flight);
- per image: one `@asset` per image, deps along `base`, Dagster's multiprocess executor
  with the same concurrency limit — what per-image steps on the run timeline would cost.

    python bench/step_shape.py [--images 12] [--concurrency 4] [--duration 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ONE_STEP = """
import json, time
from dagster import Definitions, in_process_executor
from build_assets.core.targets import Target
from build_assets.dagster.assets import build_images_asset
from build_assets.dagster.resources import ImageBuildResource
from build_assets.engine.builders.simulated import SimulatedBuilder

DURATIONS = json.loads({durations!r})
BUILDER = SimulatedBuilder(DURATIONS)

class Simulated(ImageBuildResource):
    def make_builder(self):
        return BUILDER

resource = Simulated(repo={repo!r}, registry="bench.invalid", home={home!r})
versions = resource.project().versions()
defs = Definitions(
    assets=[build_images_asset(versions, pool=None)],
    resources={{"image_builds": resource}},
    executor=in_process_executor,
)
"""

PER_IMAGE = """
import json, time
from dagster import AssetKey, Definitions, asset, multiprocess_executor

DURATIONS = json.loads({durations!r})
BASES = json.loads({bases!r})

def make(name, base):
    @asset(key=AssetKey(["image", name]), deps=[AssetKey(["image", base])] if base else [])
    def _build():
        time.sleep(DURATIONS[name])  # the same simulated build time
    return _build

defs = Definitions(
    assets=[make(n, b) for n, b in BASES.items()],
    executor=multiprocess_executor.configured({{"max_concurrent": {concurrency}}}),
)
"""


def cascade(n: int) -> dict[str, str | None]:
    """A few roots, each level built on the one below (n images)."""
    bases: dict[str, str | None] = {}
    names = [f"img-{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        bases[name] = None if i < 2 else names[(i - 2) // 2]
    return bases


def make_repo(repo: Path, bases: dict[str, str | None]) -> None:
    lines = ["images:"]
    for name, base in bases.items():
        folder = repo / name
        folder.mkdir(parents=True)
        head = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}" if base else "FROM scratch"
        (folder / "Dockerfile").write_text(f"{head}\nCOPY {name}/Dockerfile /d\n")
        lines.append(f"  {name}:\n    dockerfile: {name}/Dockerfile")
        if base:
            lines.append(f"    base: {base}")
    (repo / "images.yaml").write_text("\n".join(lines) + "\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=repo, check=True
        )


def critical_path(bases: dict[str, str | None], durations: dict[str, float]) -> float:
    done: dict[str, float] = {}
    for name, base in bases.items():  # bases come before their dependents
        done[name] = (done[base] if base else 0.0) + durations[name]
    return max(done.values())


def timed(module: Path, home: Path) -> float:
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    start = time.monotonic()
    subprocess.run(
        ["dagster", "asset", "materialize", "-f", str(module), "--select", "*"],
        check=True,
        env=env,
        capture_output=True,
    )
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import json

    bases = cascade(args.images)
    durations = {name: args.duration for name in bases}
    with tempfile.TemporaryDirectory(prefix="step-shape-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        make_repo(repo, bases)
        one = root / "one_step.py"
        one.write_text(
            textwrap.dedent(
                ONE_STEP.format(
                    durations=json.dumps(durations), repo=str(repo), home=str(root / "state")
                )
            )
        )
        per = root / "per_image.py"
        per.write_text(
            PER_IMAGE.format(
                durations=json.dumps(durations),
                bases=json.dumps(bases),
                concurrency=args.concurrency,
            )
        )
        results: dict[str, list[float]] = {"one step": [], "per image": []}
        for r in range(args.rounds):  # interleaved, so load affects both alike
            results["one step"].append(timed(one, root / f"h-one-{r}"))
            results["per image"].append(timed(per, root / f"h-per-{r}"))
    path = critical_path(bases, durations)
    load = os.getloadavg()[0]
    print(
        f"{args.images} images, critical path {path:.1f} s, concurrency {args.concurrency},"
        f" median of {args.rounds}, load {load:.1f}"
    )
    one_s = statistics.median(results["one step"])
    per_s = statistics.median(results["per image"])
    print(f"{'variant':<12} {'wall s':>8} {'over critical path s':>22}")
    print(f"{'one step':<12} {one_s:>8.2f} {one_s - path:>22.2f}")
    print(f"{'per image':<12} {per_s:>8.2f} {per_s - path:>22.2f}")
    print(f"per image / one step: {per_s / one_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
