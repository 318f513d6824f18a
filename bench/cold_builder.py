"""Benchmark: a handler-only rebuild on a warm engine, on a cold one, and the seed's way.

Everything runs on a private dockerd and registry started here (build-assets' stack helpers,
own data-root under a temp folder, stopped at the end), so pruning its build cache disturbs
nobody. The image: a tiny shell base (pushed once), a dependency step costing --work loop
iterations of sh (>= 10 s here), and a COPY of the handler. Seeded once (v0, pushed with its
cache), then per round a handler-only change is built through LocalDockerBuilder three ways:

  (a) warm    the same engine right after the seed: its local build cache holds the layers
  (b) cold    after `docker builder prune -af` and removing every image of the private engine:
              only the registry has the layers (the previous tag's inline cache)
  (c) seed    the seed's build_image.sh (git show SEED:build_assets/scripts/build_image.sh) on
              an equally cold engine: the legacy builder, no usable layer cache

    python bench/cold_builder.py [--work 5000000] [--rounds 2] [--seed-commit c6d4c9c] [--check]

Goal: (b) <= 1.3x (a) and (b) <= 0.3x (c). Median of --rounds, interleaved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from build_assets.core.context import BuildContext  # noqa: E402
from build_assets.engine import registry  # noqa: E402
from build_assets.engine.builders.base import BuildRequest, BuildResult  # noqa: E402
from build_assets.engine.builders.local import LocalDockerBuilder  # noqa: E402
from build_assets.stack.local import stack_down, stack_up  # noqa: E402
from tests.engine.test_local_builder import make_context  # noqa: E402

IMAGE = "bench-cold/app"
LEGACY_DOCKER = "/usr/bin/docker"  # the engine-side `docker import`/`push` need no buildx


def docker(*args: str, stdin: bytes | None = None) -> str:
    """Run the docker CLI against the private engine (DOCKER_HOST is set by main)."""
    proc = subprocess.run(
        [LEGACY_DOCKER if Path(LEGACY_DOCKER).exists() else "docker", *args],
        input=stdin,
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode()


def push_shell_base(registry_host: str, work: Path) -> str:
    """A rootfs with sh and its libraries, imported and pushed; its ref pinned by digest."""
    root = work / "rootfs"
    sh = shutil.which("sh")
    assert sh
    ldd = subprocess.run(["ldd", sh], capture_output=True, text=True, check=True).stdout
    for path in {str(Path(sh).resolve()), *(t for t in ldd.split() if t.startswith("/"))}:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    (root / "bin").mkdir(exist_ok=True)
    if not (root / "bin" / "sh").exists():
        shutil.copy2(Path(sh).resolve(), root / "bin" / "sh")
    ref = f"{registry_host}/bench-cold/shell:1"
    tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True)
    docker("import", "-", ref, stdin=tar.stdout)
    docker("push", ref)
    digest = registry.manifest_digest(f"{registry_host}/bench-cold/shell", "1")
    assert digest, "base image not in the registry"
    return f"{registry_host}/bench-cold/shell@{digest}"


def context(work_iterations: int, handler: str) -> BuildContext:
    dockerfile = (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        f"RUN i=0; while [ $i -lt {work_iterations} ]; do i=$((i+1)); done; echo $i > /deps\n"
        "COPY handler.txt /handler.txt\n"
    )
    return make_context({"Dockerfile": dockerfile.encode(), "handler.txt": handler.encode()})


def request(
    repo: str, tag: str, ctx: BuildContext, base: str, previous: str | None
) -> BuildRequest:
    return BuildRequest(
        image="app",
        version=tag,
        tag=tag,
        repository=repo,
        dockerfile="Dockerfile",
        build_args={},
        base_image=base,
        context=ctx,
        previous_tag=previous,
    )


def build(builder: LocalDockerBuilder, req: BuildRequest) -> tuple[float, BuildResult]:
    """Wall seconds of one build through the builder (start to pushed digest)."""
    start = time.monotonic()
    handle = builder.start(req)
    while not builder.poll([handle], timeout=1.0):
        pass
    result = builder.finish(handle)
    return time.monotonic() - start, result


def make_cold() -> None:
    """Empty the private engine: its BuildKit cache and every image it holds."""
    refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    refs = [r for r in refs if not r.endswith(":<none>")]
    if refs:
        docker("image", "rm", "-f", *sorted(set(refs)))
    docker("image", "prune", "-af")  # untagged leftovers (this engine is the bench's own)
    docker("builder", "prune", "-af")
    assert not docker("images", "-aq").split(), "the private engine still holds images"


def cached_dependency_step(result: BuildResult) -> bool:
    log = Path(result.extra["log_path"]).read_text(errors="replace")
    return " CACHED" in log and "importing cache manifest" in log


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=int, default=5_000_000, help="sh loop iterations (deps)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed-commit", default="c6d4c9c", help="commit of the seed's script")
    ap.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ba-cold-"))
    seed_script = work / "seed_build_image.sh"
    seed_script.write_text(
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "show",
                f"{args.seed_commit}:build_assets/scripts/build_image.sh",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    home = work / "stack"
    try:
        info = stack_up(home, reuse_docker=False, log=lambda _: None)
        os.environ["DOCKER_HOST"] = info.docker_host
        reg = info.registry
        repo = f"{reg}/{IMAGE}"
        base = push_shell_base(reg, work)
        ours = LocalDockerBuilder(work / "ours", registry_host=reg)
        seeds = LocalDockerBuilder(work / "seed", registry_host=reg, script=seed_script)

        t_seed, first = build(ours, request(repo, "v0", context(args.work, "v0"), base, None))
        print(f"seed build (dependency step from scratch): {t_seed:.1f} s", flush=True)

        warm, cold, plain = [], [], []
        for r in range(1, args.rounds + 1):
            # (a) warm: the engine still has everything from the builds before
            t, _ = build(ours, request(repo, f"a{r}", context(args.work, f"a{r}"), base, "v0"))
            warm.append(t)
            # (b) cold: only the registry has the layers
            make_cold()
            t, res = build(ours, request(repo, f"b{r}", context(args.work, f"b{r}"), base, "v0"))
            assert cached_dependency_step(res), f"cold build did not reuse the cache: {res.extra}"
            cold.append(t)
            # (c) the seed's script on an empty engine
            make_cold()
            t, _ = build(seeds, request(repo, f"c{r}", context(args.work, f"c{r}"), base, "v0"))
            plain.append(t)
            make_cold()
            # the next (a) starts warm again
            build(ours, request(repo, f"w{r}", context(args.work, "v0"), base, "v0"))
            print(
                f"round {r}: warm {warm[-1]:.2f} s, cold {cold[-1]:.2f} s, seed {plain[-1]:.2f} s",
                flush=True,
            )
        del first

        a, b, c = (statistics.median(x) for x in (warm, cold, plain))
        load = os.getloadavg()[0]
        print(f"\nhandler-only rebuild, median of {args.rounds} (load average {load:.1f}):")
        print(f"{'build':<44}{'wall s':>8}{'ratio':>22}")
        print(f"{'(a) warm engine':<44}{a:>8.2f}")
        print(
            f"{'(b) empty engine, cache from the registry':<44}{b:>8.2f}"
            f"{f'{b / a:.2f}x (a), {b / c:.2f}x (c)':>22}"
        )
        print(f"{'(c) seed script, empty engine':<44}{c:>8.2f}")
        ok = b <= 1.3 * a and b <= 0.3 * c
        print(f"goal (b) <= 1.3x (a) and <= 0.3x (c): {'met' if ok else 'MISSED'}")
        return 0 if ok or not args.check else 1
    finally:
        stack_down(home, log=lambda _: None)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
