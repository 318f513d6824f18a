"""Hostile manifests bounce: `build-assets plan --json` on each file of tests/manifests/hostile/
(plus a few generated too big to commit) in a real git repository, as a subprocess under a
400 MB address-space limit. Each must exit 2 with one `build-assets: error:` line naming the
file and what is wrong (its `# expect:` comment), no traceback, within 1 s of a trivial plan's
wall time and under 200 MB of resident memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from build_assets.core.manifest import _cycle_problems
from build_assets.core.model import ImageSpec, Manifest
from tests.gitutil import commit_all, make_repo

CORPUS = Path(__file__).parents[1] / "manifests" / "hostile"
LIMIT_AS = 400 * 2**20
MAX_RSS_KB = 200 * 1024
D = "    dockerfile: Dockerfile\n"


def _generated(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (text, expected fragment) of cases too big to keep in the repository."""
    n = 100_000
    cycle = "images:\n" + "".join(f"  i{k}:\n{D}    base: i{(k + 1) % n}\n" for k in range(n))
    return {
        "dockerfile-10mb.yaml": (
            "images:\n  a:\n    dockerfile: '" + "d" * 10_000_000 + "'\n",
            "a manifest may be at most",
        ),
        "cycle-100k.yaml": (cycle, "a manifest may be at most"),
        "values-300k.yaml": (
            f"images:\n  a:\n{D}    source_paths: [" + ",".join(["a"] * 300_000) + "]\n",
            "more than 100,000 values",
        ),
        "symlink-out.yaml": (
            f"images:\n  a:\n{D}    source_paths: [l2/etcdir/passwd]\n",
            "leads out of the repository through the symlink 'l2/etcdir'",
        ),
        "symlink-inside.yaml": (
            f"images:\n  a:\n{D}    source_paths: [l2/inner/main.py]\n",
            "goes through the symlink 'l2/inner'",
        ),
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = {"Dockerfile": "FROM scratch\n", "app/main.py": "x = 1\n"}
    root = make_repo(tmp_path_factory.mktemp("hostile") / "repo", files, commit=False)
    (root / "l2").mkdir()
    os.symlink("/etc", root / "l2" / "etcdir")  # committed symlinked folders
    os.symlink("../app", root / "l2" / "inner")
    commit_all(root, "init")
    return root


def _plan(repo: Path, manifest: Path, home: Path) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run `plan --json`; return the process, its wall time and its max RSS in KB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env.update(BUILD_ASSETS_HOME=str(home))  # no registry: plan reads the contexts only
    script = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], preexec_fn=lambda: resource.setrlimit("
        f"resource.RLIMIT_AS, ({LIMIT_AS}, {LIMIT_AS})), capture_output=True, timeout=30)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "sys.stderr.buffer.write(p.stderr)\n"
        "print(p.returncode, wall, rss)\n"
    )
    cmd = [sys.executable, "-m", "build_assets", "plan", "--json"]
    cmd += ["--repo", str(repo), "--manifest", str(manifest)]
    # a fresh parent per run, so RUSAGE_CHILDREN's maximum is this plan's alone
    proc = subprocess.run(
        [sys.executable, "-c", script, *cmd], env=env, capture_output=True, text=True, timeout=60
    )
    code, wall, rss = proc.stdout.split()
    done = subprocess.CompletedProcess(cmd, int(code), "", proc.stderr)
    return done, float(wall), int(rss)


@pytest.fixture(scope="module")
def baseline(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    """Wall time of a trivial valid plan (interpreter start-up included), best of 3."""
    home = tmp_path_factory.mktemp("home")
    runs = []
    for i in range(3):  # new bytes each time: no version-cache hit, full validation runs
        manifest = home / f"ok-{i}.yaml"
        manifest.write_text(f"# run {i}\nimages:\n  a:\n{D}    source_paths: [app]\n")
        runs.append(_plan(repo, manifest, home))
    assert all(p.returncode == 0 for p, _, _ in runs), runs[0][0].stderr
    return min(wall for _, wall, _ in runs)


def _cases(tmp: Path) -> list[tuple[Path, str]]:
    out = []
    for path in sorted(CORPUS.glob("*.yaml")):
        first = path.read_text().split("\n", 1)[0]
        assert first.startswith("# expect: "), path
        out.append((path, first.removeprefix("# expect: ")))
    for name, (text, expected) in _generated(tmp).items():
        (tmp / name).write_text(text)
        out.append((tmp / name, expected))
    return out


def test_the_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("*.yaml"))) >= 40


def test_every_hostile_manifest_is_one_line_fast_and_small(
    repo: Path, baseline: float, tmp_path: Path
) -> None:
    failures = []
    cases = _cases(tmp_path)
    for i, (manifest, expected) in enumerate(cases):
        # a trivial valid plan right before each case: the machine's load changes over time
        trivial = tmp_path / f"ok-{i}.yaml"
        trivial.write_text(f"# case {i}\nimages:\n  a:\n{D}    source_paths: [app]\n")
        paired = max(baseline, _plan(repo, trivial, tmp_path / "home")[1])
        proc, wall, rss = _plan(repo, manifest, tmp_path / "home")
        lines = proc.stderr.splitlines()
        errors = [line for line in lines if line.startswith("build-assets: error: ")]
        problems = []
        if proc.returncode != 2:
            problems.append(f"exit {proc.returncode}")
        if len(errors) != 1 or len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines")
        if "Traceback" in proc.stderr:
            problems.append("traceback")
        if errors and (expected not in errors[0] or str(manifest) not in errors[0]):
            problems.append(f"no {expected!r} / file name")
        if wall > paired + 1.0:
            problems.append(f"{wall:.2f} s (trivial plan: {paired:.2f} s)")
        if rss > MAX_RSS_KB:
            problems.append(f"{rss // 1024} MB")
        if problems:
            failures.append(f"{manifest.name}: {', '.join(problems)}: {proc.stderr[:300]!r}")
    assert not failures, "\n".join(failures)
    assert len(cases) >= 45


def test_graph_walks_are_linear() -> None:
    """A 100,000-image cycle and a 2,000-long chain, straight on the model (no YAML)."""
    n = 100_000
    ring = {f"i{k}": ImageSpec(dockerfile="D", base=f"i{(k + 1) % n}") for k in range(n)}
    started = time.perf_counter()
    [line] = _cycle_problems(Manifest(images=ring, source="m"), "m")
    assert "cycle of bases i0 -> i1 -> i2 -> … (100,000 images)" in line
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    chain = {
        f"c{k}": ImageSpec(dockerfile="D", base=f"c{k - 1}" if k else None) for k in range(2000)
    }
    manifest = Manifest(images=dict(reversed(chain.items())), source="m")
    assert manifest.order() == [f"c{k}" for k in range(2000)]
    assert manifest.dependents("c1997") == ["c1998", "c1999"]
    [deep] = _cycle_problems(manifest, "m")
    assert "chain of 101 bases is deeper than 100" in deep
    assert time.perf_counter() - started < 1.0


def test_non_utf8_file_names_reach_json_escaped(tmp_path: Path) -> None:
    """A file name that is not UTF-8 shows as \\xNN in `plan --json`, never a lone surrogate."""
    files = {
        "Dockerfile": "FROM scratch\n",
        "images.yaml": f"images:\n  a:\n{D}    source_paths: [app]\n",
    }
    root = make_repo(tmp_path / "repo", {**files, "app/main.py": "x\n"})
    (root / "app").joinpath(os.fsdecode(b"caf\xe9.pem")).write_text("k\n")  # untracked
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env.update(BUILD_ASSETS_HOME=str(tmp_path / "home"))  # no registry: contexts only
    proc = subprocess.run(
        [sys.executable, "-m", "build_assets", "plan", "--json", "--repo", str(root)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode("utf-8")  # strict: fails on any invalid byte
    assert "\\ud" not in out  # no JSON-escaped lone surrogate
    assert "caf\\xe9.pem" in proc.stderr.decode("utf-8")  # the warning names it, escaped
