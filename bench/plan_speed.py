"""Benchmark: `build-assets plan` against `git status` on a large synthetic monorepo.

Makes (once, then reuses) a git monorepo of 100,000 tracked files and 200 images in a
realistic cascade — 4 root bases, 16 mid bases, 180 Lambda images each with its own handler
folder and 1-3 shared packages — plus 50 commits of history (1-3 files each), then times,
side by side in one run (median of --runs):

  git status --porcelain            what a developer waits for anyway
  plan --json (clean tree)          goal: <= 2x git status
  plan --since HEAD --json          goal: <= 2x git status (what CI runs)
  plan --since HEAD~50 --json       goal: <= 2x git status once computed, <= 4x the first
                                    time (its version cache entry removed before each run)
  plan --json (1,000 files edited)  goal: <= 3x git status
  small repo (2,000 files, 10 images): plan --since HEAD --json, goal <= 0.2 s
  plan --json (clean tree) asking a registry (--registry, default $BUILD_ASSETS_REGISTRY;
  a namespace of its own, so nothing is built there): one HEAD per image, in parallel
  naive: read + sha256 every file of every image's context (what hashing without git's
  index costs)

Commands run round-robin, so load from other work on the machine hits them alike; each row
shows wall seconds and CPU seconds (user + sys), a steadier figure on a busy machine. The
goals are checked on wall time.

    python bench/plan_speed.py [--files 100000] [--images 200] [--runs 5] [--check]
                               [--turbo | --turbo-only] [--turbo-runs 7]

--turbo adds Turborepo rows (`bench/turbo_rows.py`: `turbo run build --dry=json`, turbo 2.x
installed from npm into <work>/turbo by the bench, against `plan --json` on the same tree with
an npm workspace and turbo.json): goal plan <= 0.5x turbo, the clean tree <= 0.35x.

`plan` runs as `python -m build_assets` (the console script can sit behind a version
manager's shim whose own start-up would be measured too), with compiled bytecode as an
installed package has it (kept under the work folder: PYTHONDONTWRITEBYTECODE in the caller's
environment would otherwise recompile every module on every run), and without
BUILD_ASSETS_REGISTRY except in the registry row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / ".work" / "plan_speed"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
DIRTY_FILES = 1000
HISTORY = 50  # commits after the first one: `plan --since HEAD~50` compares across them
MARKER = ".git/bench-params"  # inside .git: no untracked file in the tree


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "core.fsmonitor=false", *args],
        cwd=repo,
        env=GIT_ENV,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def generate(repo: Path, files: int, images: int, seed: int = 7) -> None:
    """Write the synthetic monorepo and commit it (one `git add`, one commit)."""
    rng = random.Random(seed)
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    # no background `gc --auto` after the 100k-object commit: it would run during the timings
    git(repo, "config", "gc.auto", "0")
    git(repo, "config", "maintenance.auto", "false")
    roots, mids = (4, 16) if images >= 21 else (2, 3)  # the small repo: 2 + 3 + 5
    lambdas = images - roots - mids
    packages = max(roots + mids + 3, images // 2)  # bases' own + shared ones
    handler_files = 5
    # Dockerfiles + handler files + images.yaml, .dockerignore, README.md; packages get the rest
    package_files = max(packages, files - lambdas * (handler_files + 1) - roots - mids - 3)
    for p in range(packages):
        made: set[Path] = set()
        for f in range(package_files // packages + (p < package_files % packages)):
            folder = repo / f"packages/pkg{p:03d}/src/pkg{p:03d}/mod{f // 50:02d}"
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            (folder / f"m{f}.py").write_text(f"VALUE = {p * 100000 + f}\n")
    lines = ["images:"]
    for i in range(roots):
        name = f"base-root-{i}"
        (repo / f"docker/{name}").mkdir(parents=True)
        (repo / f"docker/{name}/Dockerfile").write_text(
            "ARG PYTHON_BASE=scratch\nFROM ${PYTHON_BASE}\nCOPY packages /opt\n"
        )
        lines += [
            f"  {name}:",
            f"    dockerfile: docker/{name}/Dockerfile",
            f"    source_paths: [packages/pkg{i:03d}]",
        ]
    for i in range(mids):
        name = f"base-mid-{i}"
        (repo / f"docker/{name}").mkdir(parents=True)
        (repo / f"docker/{name}/Dockerfile").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY packages /opt\n"
        )
        lines += [
            f"  {name}:",
            f"    dockerfile: docker/{name}/Dockerfile",
            f"    base: base-root-{i % roots}",
            f"    source_paths: [packages/pkg{roots + i:03d}]",
        ]
    for i in range(lambdas):
        name = f"fn-{i:03d}"
        handler = repo / f"services/{name}"
        handler.mkdir(parents=True)
        (handler / "Dockerfile").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /var/task\n"
        )
        for h in range(handler_files):
            (handler / f"handler_{h}.py").write_text(
                f"def handler(e, c):\n    return {i * 10 + h}\n"
            )
        shared = rng.sample(range(roots + mids, packages), rng.randint(1, 3))
        paths = ", ".join([f"services/{name}", *(f"packages/pkg{s:03d}" for s in shared)])
        lines += [
            f"  {name}:",
            f"    dockerfile: services/{name}/Dockerfile",
            f"    base: base-mid-{i % mids}",
            f"    source_paths: [{paths}]",
            f"    lambda: {name}-function",
        ]
    (repo / "images.yaml").write_text("\n".join(lines) + "\n")
    (repo / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
    (repo / "README.md").write_text("synthetic monorepo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "synthetic monorepo")
    history(repo, HISTORY, rng)
    (repo / MARKER).write_text(json.dumps({"files": files, "images": images, "history": HISTORY}))


def history(repo: Path, commits: int, rng: random.Random) -> None:
    """`commits` more commits, each editing 1-3 handler or package files (a team's day)."""
    files = git(repo, "ls-files", "services", "packages").splitlines()
    for k in range(commits):
        edited = rng.sample(files, rng.randint(1, 3))
        for rel in edited:
            with open(repo / rel, "a") as f:
                f.write(f"# change {k}\n")
        git(repo, "add", "--", *edited)
        git(repo, "commit", "-q", "-m", f"change {k}")


SMALL_FILES, SMALL_IMAGES = 2000, 10


def ensure(repo: Path, files: int, images: int) -> None:
    """Generate the repo unless it is there with these parameters; then a clean tree."""
    params = {"files": files, "images": images, "history": HISTORY}
    marker = repo / MARKER
    if not marker.exists() or json.loads(marker.read_text()) != params:
        print(f"generating {files} files / {images} images in {repo} ...", flush=True)
        start = time.perf_counter()
        generate(repo, files, images)
        print(f"  generated in {time.perf_counter() - start:.1f}s", flush=True)
    git(repo, "checkout", "--", ".")


def commit_entry(repo: Path, ref: str) -> Path:
    """The version cache's entry of `ref` (with the repo's images.yaml)."""
    from build_assets.core import versioncache

    tree = git(repo, "rev-parse", f"{ref}^{{tree}}").strip()
    text = git(repo, "show", f"{ref}:images.yaml")
    key = versioncache.commit_key(tree, "tree:images.yaml", text.encode())
    return repo / ".git" / versioncache.COMMITS / f"{key}.json"


def tracked_count(repo: Path) -> int:
    return git(repo, "ls-files", "-z").count("\0")


def naive_hash(repo: Path) -> int:
    """Read and sha256 every file of every image's context (no git index): the baseline."""
    import yaml

    images = yaml.safe_load((repo / "images.yaml").read_text())["images"]
    total = 0
    for spec in images.values():
        h = hashlib.sha256()
        for root in [spec["dockerfile"], *spec.get("source_paths", [])]:
            base = repo / root
            paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
            for p in paths:
                h.update(str(p.relative_to(repo)).encode())
                h.update(p.read_bytes())
                total += 1
        h.hexdigest()
    return total


@dataclass
class Timing:
    """Medians over the measured runs of one command."""

    wall: float
    cpu: float  # user + sys of the command and its children
    stdout: str


CHILD_ENV: dict[str, str] = {}  # set in main(): bytecode on, no registry


def _run_once(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=False, env=CHILD_ENV or None
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def timed(cmds: dict[str, list[str]], cwd: Path, runs: int) -> dict[str, Timing]:
    """Time `cmds` round-robin (one warm-up round, then `runs` rounds): load that comes and
    goes on a shared machine then hits every command alike."""
    for cmd in cmds.values():
        _run_once(cmd, cwd)
    samples: dict[str, list[tuple[float, float, str]]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            samples[name].append(_run_once(cmd, cwd))
    return {
        name: Timing(
            statistics.median(w for w, _, _ in got),
            statistics.median(c for _, c, _ in got),
            got[-1][2],
        )
        for name, got in samples.items()
    }


def _ratio(a: Timing, b: Timing, what: str) -> str:
    return f"{a.wall / b.wall:.2f}x / {a.cpu / b.cpu:.2f}x {what}"


def dirty(repo: Path, count: int) -> None:
    files = git(repo, "ls-files", "packages").splitlines()
    step = max(1, len(files) // count)
    for rel in files[::step][:count]:
        with open(repo / rel, "a") as f:
            f.write("# edited\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument(
        "--registry",
        default=os.environ.get("BUILD_ASSETS_REGISTRY"),
        help="registry for the registry row (default: $BUILD_ASSETS_REGISTRY; none: no row)",
    )
    parser.add_argument("--naive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--turbo", action="store_true", help="add the Turborepo rows")
    parser.add_argument("--turbo-only", action="store_true", help="only the Turborepo rows")
    parser.add_argument("--turbo-runs", type=int, default=7, help="interleaved runs per row")
    args = parser.parse_args()
    if args.images < 21:
        parser.error("--images: at least 21 (4 root bases, 16 mid bases, Lambda images)")
    small = args.work.with_name(args.work.name + "_small")
    if args.naive:
        print(naive_hash(args.naive))
        return 0

    repo = args.work
    CHILD_ENV.update(os.environ)
    for name in ("BUILD_ASSETS_REGISTRY", "PYTHONDONTWRITEBYTECODE"):
        CHILD_ENV.pop(name, None)
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(args.work.with_name("pycache"))
    ensure(repo, args.files, args.images)
    if args.turbo_only:
        return print_turbo(repo, args)
    ensure(small, SMALL_FILES, SMALL_IMAGES)
    n_files = tracked_count(repo)

    plan = [sys.executable, "-m", "build_assets", "plan", "--json", "--repo", str(repo)]
    since = [*plan, "--since", "HEAD"]
    old = [*plan, "--since", f"HEAD~{HISTORY}"]
    # the first computation at the old commit: its cache entry removed before each run
    cold = ["sh", "-c", f'rm -f "{commit_entry(repo, f"HEAD~{HISTORY}")}" && exec "$@"', "-", *old]
    status = ["git", "status", "--porcelain"]
    naive = [sys.executable, __file__, "--naive", str(repo)]
    cmds = {"status": status, "plan": plan, "since": since, "old": old, "cold": cold}
    if args.registry:  # a namespace of the bench's own: no image of it is ever built
        cmds["registry"] = ["env", f"BUILD_ASSETS_REGISTRY={args.registry}/plan-speed", *plan]
    clean = timed(cmds, repo, args.runs)
    small_plan = [sys.executable, "-m", "build_assets", "plan", "--json", "--repo", str(small)]
    small_cmds = {"status": status, "since": [*small_plan, "--since", "HEAD"]}
    small_cmds["python"] = [sys.executable, "-c", "pass"]  # the interpreter's own start-up
    small_t = timed(small_cmds, small, args.runs)
    naive_t = timed({"naive": naive}, repo, max(1, args.runs // 2))["naive"]
    dirty(repo, DIRTY_FILES)
    try:
        edited = timed({"status": status, "plan": plan}, repo, args.runs)
    finally:
        git(repo, "checkout", "--", ".")
    clean_images = json.loads(clean["plan"].stdout)["images"]
    dirty_images = json.loads(edited["plan"].stdout)["images"]
    changed = sum(
        a["version"] != b["version"] for a, b in zip(clean_images, dirty_images, strict=True)
    )
    if changed == 0:
        sys.exit("dirty plan reported no changed image: the benchmark is broken")

    old_images = json.loads(clean["old"].stdout)["images"]
    if json.loads(clean["cold"].stdout) != json.loads(clean["old"].stdout):
        sys.exit("plan --since: cold and cached runs differ: the benchmark is broken")
    moved = sum(img["changed"] for img in old_images)
    status_t, clean_t, dirty_t = clean["status"], clean["plan"], edited["plan"]
    since_t, old_t, cold_t = clean["since"], clean["old"], clean["cold"]
    h = f"HEAD~{HISTORY}"
    rows = [
        ("git status --porcelain (clean)", status_t, "", ""),
        ("plan --json, clean tree", clean_t, _ratio(clean_t, status_t, "git status"), "<= 2x"),
        ("plan --since HEAD --json", since_t, _ratio(since_t, status_t, "git status"), "<= 2x"),
        (f"plan --since {h} --json", old_t, _ratio(old_t, status_t, "git status"), "<= 2x"),
        (
            f"  same, first computation at {h}",
            cold_t,
            _ratio(cold_t, status_t, "git status"),
            "<= 4x",
        ),
        (f"git status --porcelain ({DIRTY_FILES} edited)", edited["status"], "", ""),
        (
            f"plan --json, {DIRTY_FILES} files edited",
            dirty_t,
            _ratio(dirty_t, status_t, "git status"),
            "<= 3x",
        ),
        ("naive: read + sha256 every context file", naive_t, _ratio(naive_t, clean_t, "plan"), ""),
    ]
    if "registry" in clean:
        reg_t = clean["registry"]
        if not all(img["changed"] for img in json.loads(reg_t.stdout)["images"]):
            sys.exit("registry row: some image is built in the bench's namespace: broken")
        rows.insert(
            2, ("plan --json, clean, registry", reg_t, _ratio(reg_t, status_t, "git status"), "")
        )
    rows += [
        (
            f"small repo ({SMALL_FILES} files): git status",
            small_t["status"],
            "",
            "",
        ),
        (
            "small repo: plan --since HEAD --json",
            small_t["since"],
            _ratio(small_t["since"], small_t["status"], "git status"),
            "<= 0.2 s",
        ),
        ("  of which python start-up (-c pass)", small_t["python"], "", ""),
    ]
    print(
        f"\nrepo: {n_files} tracked files, {len(clean_images)} images; "
        f"dirty run changes {changed} images; {moved} images changed since {h}; "
        f"median of {args.runs} runs; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print(f"{'measure':42} {'wall s':>7} {'cpu s':>7}  {'ratio wall / cpu':28} goal (wall)")
    for name, t, ratio, goal in rows:
        print(f"{name:42} {t.wall:7.3f} {t.cpu:7.3f}  {ratio:28} {goal}")
    ok = (
        clean_t.wall <= 2 * status_t.wall
        and dirty_t.wall <= 3 * status_t.wall
        and max(since_t.wall, old_t.wall) <= 2 * status_t.wall
        and cold_t.wall <= 4 * status_t.wall
        and small_t["since"].wall <= 0.2
    )
    print(f"\ngoals {'met' if ok else 'MISSED'}")
    if args.turbo:
        ok = print_turbo(repo, args) == 0 and ok
    return 0 if ok or not args.check else 1


def print_turbo(repo: Path, args: argparse.Namespace) -> int:
    """The Turborepo rows; 1 when --check and a goal is missed."""
    sys.path.insert(0, str(HERE))
    from turbo_rows import turbo_rows

    rows = turbo_rows(repo, args.work.parent, args.turbo_runs, timed, CHILD_ENV, GIT_ENV)
    print(f"\nTurborepo, median of {args.turbo_runs} interleaved runs")
    print(f"{'tree':58} {'plan s':>7} {'turbo s':>8}  ratio (goal)    peak RSS plan / turbo")
    ok = True
    for i, (name, plan_t, turbo_t, text) in enumerate(rows):
        goal = 0.35 if i == 0 else 0.5
        ok = ok and plan_t.wall <= goal * turbo_t.wall
        print(f"{name:58} {plan_t.wall:7.3f} {turbo_t.wall:8.3f}  {text} (<= {goal})")
    print(f"turbo goals {'met' if ok else 'MISSED'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
