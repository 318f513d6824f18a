"""Turborepo rows for `bench/plan_speed.py`: `turbo run build --dry=json` against `plan --json`.

turbo comes from the npm registry, installed once by the bench into `<work>/turbo` (the tests
never need it). Its tree is a local clone of the bench repo plus a `package.json` per image
folder and per shared package (an image depends on its base's package and on its source
packages), a root npm workspace and `turbo.json` (`build` with `dependsOn: ["^build"]`),
committed once; `plan` is timed on the same clone. Rows: clean, 1 file edited, 1,000 files
edited in 100 packages; medians of interleaved runs, and each command's peak RSS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TURBO_SPEC = "turbo@2"  # latest 2.x from the npm registry
MARKER = ".git/bench-turbo"


def ensure_turbo(work: Path) -> Path:
    """The turbo executable, installed with npm into `work/turbo` the first time."""
    folder = work / "turbo"
    exe = folder / "node_modules" / ".bin" / "turbo"
    if not exe.exists():
        if not shutil.which("npm"):
            sys.exit("the Turborepo rows need npm (apt-get install npm)")
        folder.mkdir(parents=True, exist_ok=True)
        print(f"installing {TURBO_SPEC} into {folder} ...", flush=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", TURBO_SPEC],
            check=True,
            capture_output=True,
        )
    return exe


def _git(repo: Path, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def turbo_tree(source: Path, dest: Path, git_env: dict[str, str]) -> Path:
    """A clone of `source` with the npm workspace and turbo.json committed (made once per
    commit of `source`)."""
    import yaml

    head = _git(source, "rev-parse", "HEAD", env=git_env).strip()
    marker = dest / MARKER
    if marker.exists() and marker.read_text() == head:
        _git(dest, "checkout", "--", ".", env=git_env)
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    print(f"making the Turborepo tree {dest} ...", flush=True)
    subprocess.run(["git", "clone", "-q", "--local", str(source), str(dest)], check=True)
    images = yaml.safe_load((dest / "images.yaml").read_text())["images"]
    packages = sorted(p.name for p in (dest / "packages").iterdir() if p.is_dir())

    def write(folder: Path, name: str, deps: list[str]) -> None:
        doc: dict[str, Any] = {
            "name": name,
            "version": "0.0.0",
            "private": True,
            "scripts": {"build": "true"},
        }
        if deps:
            doc["dependencies"] = {d: "*" for d in sorted(set(deps))}
        (folder / "package.json").write_text(json.dumps(doc, indent=2) + "\n")

    for pkg in packages:
        write(dest / "packages" / pkg, pkg, [])
    for name, spec in images.items():
        deps = [spec["base"]] if spec.get("base") else []
        deps += [p.split("/")[1] for p in spec.get("source_paths", []) if p.startswith("packages/")]
        write(dest / Path(spec["dockerfile"]).parent, name, deps)
    folders = sorted({str(Path(s["dockerfile"]).parent.parent) for s in images.values()})
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True).stdout.strip()
    root = {
        "name": "bench-monorepo",
        "private": True,
        "packageManager": f"npm@{npm}",
        "workspaces": [f"{f}/*" for f in folders] + ["packages/*"],
    }
    (dest / "package.json").write_text(json.dumps(root, indent=2) + "\n")
    turbo = {"$schema": "https://turbo.build/schema.json", "tasks": {"build": {}}}
    turbo["tasks"]["build"] = {"dependsOn": ["^build"]}
    (dest / "turbo.json").write_text(json.dumps(turbo, indent=2) + "\n")
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=dest,
        check=True,
        capture_output=True,
    )
    (dest / ".gitignore").write_text(".turbo/\nnode_modules/\n")
    _git(dest, "add", "-A", env=git_env)
    _git(dest, "commit", "-q", "-m", "npm workspace + turbo.json", env=git_env)
    marker.write_text(head)
    return dest


# run in a small Python of its own: a child forked from the bench would start with the bench's
# RSS as its high-water mark (kept across exec), hiding the command's own
_PEAK = (
    "import os, sys\n"
    "pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def peak_mb(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Peak RSS (MiB) of one run of `cmd` (wait4 of the process, from a small parent)."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def turbo_rows(
    repo: Path,
    work: Path,
    runs: int,
    timed: Callable[..., dict[str, Any]],
    env: dict[str, str],
    git_env: dict[str, str],
) -> list[tuple[str, Any, Any, str]]:
    """(row, plan timing, turbo timing, ratio text) for the clean / 1 / 1,000-edited trees."""
    exe = ensure_turbo(work)
    tree = turbo_tree(repo, work / "plan_speed_turbo", git_env)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout
    env.update(TURBO_TELEMETRY_DISABLED="1", TURBO_NO_UPDATE_NOTIFIER="1", DO_NOT_TRACK="1")
    plan = [sys.executable, "-m", "build_assets", "plan", "--json", "--repo", str(tree)]
    turbo = [str(exe), "run", "build", "--dry=json"]
    cmds = {"plan": plan, "turbo": turbo}
    rows = []
    # source files only (a package.json with a comment appended is no longer JSON)
    files = [
        f for f in _git(tree, "ls-files", "packages", env=git_env).splitlines() if f.endswith(".py")
    ]
    for label, edited in (
        ("clean", 0),
        ("1 file edited", 1),
        ("1,000 files edited in 100 packages", 1000),
    ):
        chosen = files[:: max(1, len(files) // edited)][:edited] if edited else []
        for rel in chosen:
            with open(tree / rel, "a") as fh:
                fh.write("# edited\n")
        touched = len({rel.split("/")[1] for rel in chosen})
        try:
            got = timed(cmds, tree, runs)
            mem = {k: peak_mb(c, tree, env) for k, c in cmds.items()}
        finally:
            _git(tree, "checkout", "--", ".", env=git_env)
        tasks = len(json.loads(got["turbo"].stdout)["tasks"])
        ratio = got["plan"].wall / got["turbo"].wall
        rows.append(
            (
                f"turbo {version.strip()} ({tasks} tasks), {label} ({touched} pkgs)",
                got["plan"],
                got["turbo"],
                f"{ratio:.2f}  peak {mem['plan']:.0f} / {mem['turbo']:.0f} MiB",
            )
        )
    return rows
