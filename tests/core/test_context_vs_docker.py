"""Build contexts proved against Docker itself, not against our idea of Docker.

For every shape of a corpus (hand-written cases the issue names, plus ignore files drawn by a
seeded generator over one fixed tree), the same Dockerfile FROM scratch is built twice on the
real engine: through build-assets (its context, its archive, `build_image.sh`, the local
builder) and with plain `DOCKER_BUILDKIT=1 docker build -f <Dockerfile> <repo root>`. The two
images' file systems must be equal (path, type, permission bits, link target). Where Docker's
build fails, `plan` (the version computation) must fail first, with one line naming the
image, `Dockerfile:LINE` and the source; where Docker builds, `plan` must not fail.

Every file of the tree is tracked by git and every COPY source lies under `source_paths`, so
the two contexts may differ only where build-assets is wrong (git-ignored files and files
outside `source_paths` are left out by design and are tested elsewhere).
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from build_assets.core.context import folders_of
from build_assets.core.contextcheck import ignore_file_for
from build_assets.core.gitrepo import WorktreeScan
from build_assets.core.ignore import DockerIgnore
from build_assets.core.manifest import load_manifest
from build_assets.core.versioning import select_context, worktree_versions
from build_assets.engine.builders.base import make_request
from build_assets.engine.builders.local import LocalDockerBuilder
from build_assets.errors import ManifestError
from build_assets.stack.local import StackInfo
from tests.gitutil import commit_all, git, write
from tests.importtime import run_cli

pytestmark = pytest.mark.stack

PLAIN_DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: drives the engine's BuildKit
IMAGE = "shape"
DOCKERFILE = "services/a/Dockerfile"
SOURCE_PATHS = ["services/a", "libs"]

TREE: dict[str, str] = {
    "services/a/handler.py": "def handler(event, context):\n    return 1\n",
    "services/a/util.py": "X = 1\n",
    "services/a/run.sh": "#!/bin/sh\necho run\n",
    "services/a/data/config.json": "{}\n",
    "services/a/data/sub/deep.txt": "deep\n",
    "services/a/docs/README.md": "# a\n",
    "services/a/odd name [1].py": "odd = 1\n",
    "services/a/ünïcödé.txt": "u\n",
    "services/a/#hash;semi.txt": "h\n",
    "libs/core/__init__.py": "",
    "libs/core/models.py": "class M: ...\n",
    "libs/core/tests/test_models.py": "def test(): ...\n",
    "libs/core/README.md": "# core\n",
    "libs/extra/x.py": "x = 1\n",
    "README.md": "# the repo\n",
}
EXECUTABLE = ["services/a/run.sh"]
SYMLINKS = {"services/a/link.py": "handler.py", "libs/core/alias": "models.py"}

COPY_BOTH = "COPY services/a /t/a\nCOPY libs /t/libs\n"


@dataclass
class Shape:
    """One case: ignore files and a Dockerfile over the fixed tree."""

    name: str
    ignores: Mapping[str, str] = field(default_factory=dict)  # path -> text
    copies: str = COPY_BOTH  # the Dockerfile's lines after FROM scratch
    dockerfile: str = DOCKERFILE
    source_paths: tuple[str, ...] = tuple(SOURCE_PATHS)


HAND_WRITTEN = [
    Shape("allow-list, handler folder not re-included", {".dockerignore": "*\n!libs/\n"},
          "COPY services/a /var/task\n"),
    Shape("allow-list of the handler's .py files", {".dockerignore": "*\n!services/a/*.py\n"},
          "COPY services/a /var/task\n", source_paths=("services/a",)),
    Shape("allow-list with re-includes and a hole",
          {".dockerignore": "*\n!services/\nservices/a/docs\n!libs/core\nlibs/core/tests\n"}),
    Shape("negation inside an excluded folder",
          {".dockerignore": "libs/core\n!libs/core/tests/test_models.py\nservices/a/data\n"
                            "!services/a/data/sub/deep.txt\n"}),
    Shape("** in the middle", {".dockerignore": "services/**/sub\nlibs/**/tests/*.py\n**/*.md\n"}),
    Shape("leading / and ./", {".dockerignore": "/libs/extra\n./services/a/docs/\n/*.md\n"}),
    Shape("Dockerfile.prod with its own ignore file (the root one does not apply)",
          {".dockerignore": "**/*.py\n",
           "services/a/Dockerfile.prod.dockerignore": "services/a/data\nlibs/extra\n"},
          dockerfile="services/a/Dockerfile.prod"),
    Shape("Dockerfile.dockerignore that ignores its Dockerfile",
          {"services/a/Dockerfile.dockerignore": "**/Dockerfile*\n"}, "COPY services/a /t/a\n"),
    Shape("the Dockerfile inside its own COPY source", {}, "COPY services/a /var/task\n"),
    Shape("the Dockerfile ignored, its folder copied",
          {".dockerignore": "services/a/Dockerfile\n"}, "COPY services/a /var/task\n"),
    Shape("modes and symlinks", {".dockerignore": "libs/core/tests\n"},
          "COPY services/a/run.sh services/a/link.py /bin/\nCOPY libs/core /core\n"),
    Shape("globs in COPY", {".dockerignore": "services/a/util.py\n"},
          "COPY services/a/*.py /py/\nCOPY libs/*/models.py /m/\n"
          "COPY services/a/data/*.json /cfg/\n"),
    Shape("a glob COPY that matches only ignored files", {".dockerignore": "services/a/*.py\n"},
          "COPY services/a/*.py /py/\n"),
    Shape("odd file names", {".dockerignore": "services/a/#*\n"},
          'COPY ["services/a/odd name [1].py", "/odd/"]\nCOPY services/a /t/a\n'),
    Shape("one file copied from inside an ignored folder", {".dockerignore": "services/a/data\n"},
          "COPY services/a/data/config.json /config.json\n"),
    Shape("one file re-included inside an ignored folder",
          {".dockerignore": "services/a/data\n!services/a/data/config.json\n"},
          "COPY services/a/data/config.json /config.json\nCOPY services/a /t/a\n"),
    Shape("folders left empty by the ignore file",
          {".dockerignore": "**/*.md\nlibs/core/tests/*\n"},
          "COPY services/a/docs /docs\nCOPY services/a /t/a\nCOPY libs /t/libs\n"),
]  # fmt: skip

# Ignore-file lines the generator draws from (each may be negated): folders, files, `**`,
# anchors, character classes, the Dockerfile itself.
POOL = [
    "*", "services", "services/a", "services/a/*.py", "services/a/data", "services/a/data/*",
    "services/**/deep.txt", "**/*.md", "**/tests", "libs", "libs/core", "libs/*/tests",
    "libs/core/*.py", "/libs/extra", "./services/a/docs", "**/Dockerfile", "services/a/Dockerfile",
    "**/*.sh", "services/a/[hu]*.py", "services/a/?ink.py", "libs/core/alias", "**",
    "services/a/data/sub", "libs/**/models.py",
]  # fmt: skip


def generated(count: int, seed: int = 18) -> list[Shape]:
    """`count` shapes with ignore files drawn from POOL (the same ones on every run)."""
    rng = random.Random(seed)
    shapes = []
    for n in range(count):
        lines = []
        for _ in range(rng.randint(2, 5)):
            line = rng.choice(POOL)
            lines.append(("!" if lines and rng.random() < 0.4 else "") + line)
        shapes.append(
            Shape(f"generated {n}: {' | '.join(lines)}", {".dockerignore": "\n".join(lines) + "\n"})
        )
    return shapes


CORPUS = HAND_WRITTEN + generated(20)


def make_shape_repo(root: Path, shape: Shape) -> Path:
    """A committed git repo of the fixed tree with this shape's Dockerfile and ignore files."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    manifest = (
        f"images:\n  {IMAGE}:\n    dockerfile: {shape.dockerfile}\n"
        f"    source_paths: [{', '.join(shape.source_paths)}]\n"
    )
    files = {**TREE, **shape.ignores, "images.yaml": manifest}
    files[shape.dockerfile] = "FROM scratch\n" + shape.copies
    write(root, files)
    for rel in EXECUTABLE:
        (root / rel).chmod(0o755)
    for rel, target in SYMLINKS.items():
        os.symlink(target, root / rel)
    commit_all(root, shape.name)
    return root


def file_system(ref: str) -> dict[str, tuple[str, int, str]]:
    """{path: (type, permission bits, link target)} of an image's files, Docker's own
    per-container files (/.dockerenv, /dev, /proc, /sys, /etc/host*) left out."""
    cid = subprocess.run([PLAIN_DOCKER, "create", ref, "nop"], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    try:
        data = subprocess.run([PLAIN_DOCKER, "export", cid], check=True, capture_output=True).stdout
    finally:
        subprocess.run([PLAIN_DOCKER, "rm", cid], check=True, capture_output=True)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            name = m.name.rstrip("/")
            if name in (".dockerenv", "dev", "proc", "sys", "etc") or name.startswith(
                ("dev/", "proc/", "sys/", "etc/")
            ):
                continue
            kind = "dir" if m.isdir() else "link" if m.issym() else "file" if m.isfile() else "?"
            out[name] = (kind, m.mode & 0o7777, m.linkname if m.issym() else "")
    return out


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def old_walker_context(repo: Path, shape: Shape, ignore: DockerIgnore) -> set[str]:
    """The paths under `source_paths` that Docker 20.10's context walker (fsutil of 2020,
    this engine's client) sends: an excluded folder is skipped unless an exception
    pattern's text starts with its path (then the folder itself is sent, even if nothing
    inside it is). Current BuildKit (fsutil) walks into every excluded folder instead and sends one
    only as the parent of an included file (its source, read, not run here): build-assets
    follows the newer rule."""
    exceptions = [
        r.text[1:].strip().lstrip("/").removeprefix("./") for r in ignore.rules if r.negate
    ]
    sent: set[str] = set()

    def walk(folder: Path, rel: str) -> None:
        for child in sorted(folder.iterdir()):
            path = f"{rel}/{child.name}" if rel else child.name
            if path == ".git":
                continue
            excluded = ignore.excludes(path)
            if child.is_dir() and not child.is_symlink():
                if excluded and not any((e + "/").startswith(path + "/") for e in exceptions):
                    continue
                sent.add(path)
                walk(child, path)
            elif not excluded:
                sent.add(path)

    walk(repo, "")
    return {p for p in sent if _under(p, shape.source_paths)}


def our_context(repo: Path) -> tuple[set[str], DockerIgnore]:
    """The paths under `source_paths` build-assets ships (files and folders), computed by
    its own selection even where `plan` refuses the Dockerfile, and the rules in force."""
    manifest = load_manifest(repo / "images.yaml", repo)
    snapshot = WorktreeScan(repo).snapshot()
    ignore_path = ignore_file_for(manifest, IMAGE, snapshot)
    ignore = DockerIgnore(snapshot.read_text(ignore_path) if ignore_path else None)
    spec = manifest.images[IMAGE]
    selection = select_context(spec, snapshot, ignore.excluded_indices(snapshot.paths), ignore)
    files = [snapshot.file(i) for i in selection.shipped()]
    paths = {f.path for f in files} | set(folders_of(files, selection.empty_dirs))
    return {p for p in paths if _under(p, spec.source_paths)}, ignore


@dataclass
class Outcome:
    shape: Shape
    docker: dict | str  # the file system, or why `docker build` failed
    ours: dict | str | None = None  # the file system, None when plan failed
    plan_error: list[str] | None = None
    walker_sensitive: bool = False  # Docker 20.10's walker and current BuildKit's differ here


def plain_build(repo: Path, shape: Shape, ref: str) -> dict | str:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    run = subprocess.run(
        [PLAIN_DOCKER, "build", "-q", "--network", "none", "-t", ref, "-f", shape.dockerfile, "."],
        cwd=repo, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if run.returncode != 0:
        return (run.stderr.strip().splitlines() or ["docker build failed"])[-1]
    return file_system(ref)


def test_contexts_ship_what_docker_ships(
    local_stack: StackInfo, local_builder: LocalDockerBuilder, tmp_path: Path
) -> None:
    started = time.monotonic()
    outcomes: list[Outcome] = []
    refs: list[str] = []
    requests = []
    for n, shape in enumerate(CORPUS):
        repo = make_shape_repo(tmp_path / f"shape{n}", shape)
        ref = f"build-assets-differential:{n}"
        refs.append(ref)
        outcome = Outcome(shape, "")
        outcomes.append(outcome)
        ours, ignore = our_context(repo)
        outcome.walker_sensitive = old_walker_context(repo, shape, ignore) != ours
        try:
            image = worktree_versions(repo)[IMAGE]
        except ManifestError as e:
            outcome.plan_error = e.lines
        else:
            request = make_request(image, f"{local_stack.registry}/diff{n}")
            requests.append((outcome, request))
    with ThreadPoolExecutor(4) as pool:
        jobs = [(tmp_path / f"shape{n}", shape, refs[n]) for n, shape in enumerate(CORPUS)]
        plain = list(pool.map(lambda job: plain_build(*job), jobs))
    for outcome, result in zip(outcomes, plain, strict=True):
        outcome.docker = result
    handles = [(outcome, local_builder.start(req)) for outcome, req in requests]
    pending = [h for _, h in handles]
    while pending:
        done = local_builder.poll(pending)
        pending = [h for h in pending if h not in done]
    for outcome, handle in handles:
        result = local_builder.finish(handle)
        assert not result.cached
        outcome.ours = file_system(result.image_uri)
        refs.append(result.image_uri)
    subprocess.run([PLAIN_DOCKER, "rmi", "-f", *refs], capture_output=True)

    wrong = []
    sensitive = [o.shape.name for o in outcomes if o.walker_sensitive]
    for o in outcomes:
        if o.walker_sensitive:
            continue  # Docker 20.10 is not the reference there (see old_walker_context)
        if isinstance(o.docker, str):  # Docker refused the build: plan must refuse it first
            line = next((x for x in o.plan_error or () if "Dockerfile" in x), None)
            if o.plan_error is None:
                wrong.append(f"{o.shape.name}: docker build failed ({o.docker}) but plan passed")
            elif not (
                line
                and f"image '{IMAGE}'" in line
                and re.search(r"Dockerfile[.\w]*:\d+: (COPY|ADD) source '", line)
            ):
                wrong.append(
                    f"{o.shape.name}: plan failed without naming Dockerfile:LINE: {o.plan_error}"
                )
        elif o.plan_error is not None:
            wrong.append(f"{o.shape.name}: docker builds it, plan failed: {o.plan_error[0]}")
        elif o.ours != o.docker:
            ours, theirs = o.ours or {}, o.docker
            diff = sorted(set(ours.items()) ^ set(theirs.items()))
            wrong.append(f"{o.shape.name}: images differ: ours^docker = {diff[:6]}")
    assert not wrong, "\n".join(wrong)
    # the corpus exercises both outcomes, and is cheap enough for CI
    compared = [o for o in outcomes if not o.walker_sensitive]
    assert sum(isinstance(o.docker, str) for o in compared) >= 3
    assert sum(isinstance(o.docker, dict) for o in compared) >= 15
    assert len(sensitive) <= len(CORPUS) // 4, sensitive
    print(
        f"differential corpus: {len(CORPUS)} shapes, {len(compared)} compared with Docker,"
        f" {len(sensitive)} where Docker 20.10's walker is not the reference:"
        f" {sensitive}; {time.monotonic() - started:.1f} s"
    )
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_plan_refuses_what_docker_refuses_in_one_line(tmp_path: Path) -> None:
    # the first shape: an allow-list that leaves the handler folder out. Docker
    # refuses `COPY services/a`; plan says so first, naming image, Dockerfile:LINE, source.
    repo = make_shape_repo(tmp_path / "r", HAND_WRITTEN[0])
    proc, _ = run_cli("plan", cwd=repo, home=tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"image '{IMAGE}'" in lines[0]
    assert "services/a/Dockerfile:2: COPY source 'services/a'" in lines[0]
    assert "excluded by .dockerignore:1 `*`" in lines[0]
