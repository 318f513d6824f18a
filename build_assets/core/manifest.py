"""`images.yaml`: reading and validating a manifest into the runtime model (`core.model`).

`core.schema` (pydantic) checks each field's type; this module checks what spans fields and
images (names, paths, bases and their cycles, build args, functions, resource names). Every
problem is reported as one line naming the file, the image and the field, and all problems
are reported at once (`ManifestError.lines`). `Manifest`, `ImageSpec` and the default name
templates are importable from here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import ValidationError

from build_assets.core import safeyaml
from build_assets.core.functions import ALIAS_RE, ssm_name_problem
from build_assets.core.lock import valid_reference
from build_assets.core.model import (  # noqa: F401 - the runtime model, imported from here too
    DEFAULT_PROJECT_NAME,
    DEFAULT_REPOSITORY_NAME,
    MAX_MANIFEST_BYTES,
    ImageSpec,
    Manifest,
    is_external,
)
from build_assets.core.repo_paths import RepoPaths
from build_assets.core.schema import error_lines, lenient_model, to_model
from build_assets.core.show import show
from build_assets.errors import ManifestError

NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
FUNCTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BUILD_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_BUILD_ARGS = {"BASE_IMAGE"}

# Limits checked at validation, so `plan` fails before any build or AWS call would:
# an image name becomes the CodeBuild project '<name>-<env>-img-builder' (at most 128
# characters) and an ECR/registry repository (at most 256 with its prefix).
MAX_NAME = 64
MAX_PATH = 1024  # bytes of a dockerfile / source_paths entry (git pathspecs go on argv)
MAX_PATH_PART = 255  # bytes of one path component (NAME_MAX)
MAX_ARG_NAME = 128
MAX_ARG_VALUE = 8192  # a build arg value goes on the `docker build` command line
MAX_BASE_DEPTH = 100  # Docker's overlay storage stacks at most ~128 layers
MAX_LINES = 50  # problems reported at once; the rest are counted
_BAD_ARG_CHARS = re.compile(r"[\x00\n\r]")


def _check_path(value: str) -> str | None:
    p = PurePosixPath(value)
    if not value or value.startswith("/") or "\\" in value or ".." in p.parts:
        return "must be a relative path inside the repository"
    if "\0" in value or "\n" in value or "\r" in value:
        return "must not hold a NUL or line break"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH:
        return f"is {size:,} bytes long (at most {MAX_PATH})"
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART for part in p.parts):
        return f"has a path component longer than {MAX_PATH_PART} bytes"
    return None


def _capped(lines: list[str], source: str) -> list[str]:
    """At most MAX_LINES problem lines, then one line counting the rest."""
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"{source}: … and {len(lines) - MAX_LINES:,} more problems"]


# A path checker answers True (exists), False (does not exist) or a problem (a str).
PathCheck = Callable[[str], "bool | str"]


def parse_manifest(text: str, source: str, path_exists: PathCheck | None = None) -> Manifest:
    """Parse and fully validate manifest text; `path_exists` checks dockerfiles/source_paths.

    Loading is bounded (`safeyaml`): size, nesting and alias expansion are limited before
    anything walks the document."""
    data = safeyaml.load(text, source)

    if data is None or (isinstance(data, dict) and not data.get("images")):
        raise ManifestError(f"{source}: no images defined (expected a top-level 'images:' map)")
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping with a top-level 'images:' key")
    if not isinstance(data.get("images"), dict):
        raise ManifestError(f"{source}: field 'images': expected a map of image name -> entry")

    try:
        manifest = to_model(data, source)
    except ValidationError as exc:
        lines = error_lines(source, exc)
        lenient = lenient_model(data, source)
        if lenient is not None:  # report the other problems too, all in one go
            partial, invalid = lenient
            more = _semantic_problems(partial, source, path_exists, skip=invalid)
            seen = set(lines)
            lines += [p for p in more if p not in seen]
        raise ManifestError(f"{source}: invalid", lines=_capped(lines, source)) from None

    problems = _semantic_problems(manifest, source, path_exists)
    if problems:
        raise ManifestError(problems[0], lines=_capped(problems, source))
    return manifest


def _semantic_problems(
    manifest: Manifest,
    source: str,
    path_exists: PathCheck | None,
    skip: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    problems: list[str] = []
    functions: dict[str, str] = {}
    for name, spec in manifest.images.items():
        if name in skip:
            continue
        where = f"{source}: image {show(name)}"
        if len(name) > MAX_NAME:
            problems.append(
                f"{where}: name is {len(name):,} characters long (at most {MAX_NAME}: it names"
                " the registry repository and the CodeBuild project)"
            )
        elif not NAME_RE.match(name):
            problems.append(
                f"{where}: bad name (use lowercase letters, digits and single '-', e.g. 'base-api')"
            )
        if spec.base is not None and spec.base not in manifest.images:
            if not is_external(spec.base):
                problems.append(f"{where}, field 'base': unknown image {show(spec.base)}")
            elif not valid_reference(spec.base):
                problems.append(f"{where}, field 'base': bad image reference {show(spec.base)}")
        for field, values in (
            ("dockerfile", [spec.dockerfile]),
            ("source_paths", spec.source_paths),
        ):
            for value in values:
                bad = _check_path(value)
                if bad:
                    problems.append(f"{where}, field '{field}': {show(value)} {bad}")
                    continue
                found = True if path_exists is None else path_exists(value.rstrip("/"))
                if isinstance(found, str):
                    problems.append(f"{where}, field '{field}': {show(value)} {found}")
                elif not found:
                    problems.append(f"{where}, field '{field}': {show(value)} does not exist")
        problems.extend(_build_arg_problems(where, spec.build_args))
        for entry in spec.lambda_entries:
            fn = entry if isinstance(entry, str) else entry.name
            alias = None if isinstance(entry, str) else entry.alias
            if alias is not None and not ALIAS_RE.match(alias):
                problems.append(
                    f"{where}, field 'lambda': function {show(fn)}: bad alias {show(alias)}"
                    " (Lambda takes 1-128 letters, digits, '-' or '_', not only digits)"
                )
            if not FUNCTION_RE.match(fn):
                problems.append(f"{where}, field 'lambda': bad function name {show(fn)}")
            elif fn in functions:
                problems.append(
                    f"{where}, field 'lambda': function '{fn}' is already deployed by image"
                    f" {show(functions[fn])}"
                )
            else:
                functions[fn] = name
    problems.extend(_adoption_problems(manifest, source, path_exists, skip))
    publish = getattr(manifest, "publish", None)
    if publish is not None and isinstance(publish.ssm, str):
        bad = ssm_name_problem(publish.ssm)
        if bad:
            problems.append(f"{source}: field 'publish.ssm': {bad}")
    for repo, names in manifest.shared_repositories().items():
        shown = ", ".join(f"'{n}'" for n in names)
        problems.append(
            f"{source}: images {shown} would share repository '{repo}' (each image needs its"
            " own: its last build is recorded per repository); put {image} in"
            " 'naming.repository' or give each image its own 'repository'"
        )
    problems.extend(_cycle_problems(manifest, source))
    return problems


def _template_problem(template: str) -> str | None:
    try:
        template.format(image="x", env="x")
    except (KeyError, IndexError, ValueError) as exc:
        return f"bad template {template!r} (placeholders: {{image}}, {{env}}; {exc})"
    return None


# what registries (ECR's CreateRepository) and CodeBuild's CreateProject accept, checked on the
# names the templates give
_TEMPLATED = ("codebuild_project", "repository")
_REPOSITORY_RE = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,254}$")
SAMPLE_ENV = "dev"  # names are checked as in this environment (the default one)


def _resource_name_problems(manifest: Manifest, name: str, where: str) -> list[str]:
    """An image's repository and CodeBuild project names (from the templates) that AWS would
    refuse: one line each, naming the field to change."""
    problems: list[str] = []
    repo = manifest.repository_name(name, SAMPLE_ENV)
    if not (len(repo) <= 256 and _REPOSITORY_RE.match(repo)):
        field = "repository" if manifest.images[name].repository else "naming.repository"
        problems.append(
            f"{where}, field '{field}': repository name {repo!r} is not one registries accept"
            " (at most 256 characters: lowercase letters and digits, '.', '_', '-' between"
            " them, '/' between parts)"
        )
    project = manifest.project_name(name, SAMPLE_ENV)
    if not _PROJECT_RE.match(project):
        field = (
            "codebuild_project"
            if manifest.images[name].codebuild_project
            else "naming.codebuild_project"
        )
        problems.append(
            f"{where}, field '{field}': CodeBuild project name {project!r} is not one AWS"
            " accepts (2-255 characters: letters, digits, '-', '_')"
        )
    return problems


def _adoption_problems(
    manifest: Manifest, source: str, path_exists: PathCheck | None, skip: set[str]
) -> list[str]:
    """Problems of the fields that adapt build-assets to an existing monorepo."""
    problems: list[str] = []
    ignores: list[tuple[str, str | Literal[False] | None]] = [
        (f"{source}: field 'dockerignore'", manifest.dockerignore)
    ]
    for field in ("codebuild_project", "repository"):
        bad = _template_problem(getattr(manifest.naming, field))
        if bad:
            problems.append(f"{source}: field 'naming.{field}': {bad}")
    for name, spec in manifest.images.items():
        if name in skip:
            continue
        where = f"{source}: image '{name}'"
        for field in ("codebuild_project", "repository"):
            value = getattr(spec, field)
            bad = _template_problem(value) if value is not None else None
            if bad:
                problems.append(f"{where}, field '{field}': {bad}")
        named_well = len(name) <= MAX_NAME and NAME_RE.match(name)  # else reported as such
        if named_well and not any(
            f"'{f}': bad template" in p for p in problems for f in _TEMPLATED
        ):
            problems.extend(_resource_name_problems(manifest, name, where))
        if spec.base_arg is not None and not BUILD_ARG_RE.match(spec.base_arg):
            problems.append(f"{where}, field 'base_arg': bad argument name {spec.base_arg!r}")
        elif spec.base_arg is not None and spec.base_arg in spec.build_args:
            problems.append(
                f"{where}, field 'build_args': '{spec.base_arg}' is set from 'base', remove it"
            )
        ignores.append((f"{where}, field 'dockerignore'", spec.dockerignore))
    for where, value in ignores:
        if not isinstance(value, str):
            continue
        bad = _check_path(value)
        if bad:
            problems.append(f"{where}: '{value}' {bad}")
        elif path_exists is not None and path_exists(value) is not True:
            problems.append(f"{where}: '{value}' does not exist")
    return problems


def _build_arg_problems(where: str, build_args: dict[str, str]) -> list[str]:
    problems = []
    for key, value in build_args.items():
        here = f"{where}, field 'build_args'"
        if len(key) > MAX_ARG_NAME or not BUILD_ARG_RE.match(key):
            problems.append(f"{here}: bad argument name {show(key)}")
        elif key in RESERVED_BUILD_ARGS:
            problems.append(f"{here}: '{key}' is set from 'base', remove it")
        elif _BAD_ARG_CHARS.search(value):
            problems.append(
                f"{here}: '{key}' holds a line break or NUL ({show(value)}); docker build"
                " takes one-line values"
            )
        elif len(value) > MAX_ARG_VALUE:
            problems.append(
                f"{here}: '{key}' is {len(value):,} characters long (at most {MAX_ARG_VALUE})"
            )
    return problems


def _ring(cycle: list[str]) -> str:
    """'a -> b -> a', shortened for long cycles."""
    if len(cycle) <= 8:
        return " -> ".join([*cycle, cycle[0]])
    return " -> ".join([*cycle[:3], f"… ({len(cycle):,} images) …", *cycle[-2:], cycle[0]])


def _cycle_problems(manifest: Manifest, source: str) -> list[str]:
    """One line per cycle of bases, and per base chain deeper than Docker can stack.

    Every image has at most one base, so each walk up the bases ends at an image already
    walked, at no base, or closes a cycle: O(images), no recursion."""
    images = {name: spec.base for name, spec in manifest.images.items()}  # name -> base
    depth: dict[str, int] = {}  # images walked: depth of their base chain (-1: on a cycle)
    out: list[str] = []
    too_deep: list[str] = []
    for start in images:
        if start in depth:
            continue
        chain: list[str] = []
        position: dict[str, int] = {}
        node: str | None = start
        while node is not None and node in images and node not in depth:
            if node in position:  # closed a cycle: it starts where `node` first appeared
                cycle = chain[position[node] :]
                out.append(
                    f"{source}: image {show(node)}, field 'base': cycle of bases {_ring(cycle)}"
                )
                for n in cycle:
                    depth[n] = -1
                chain = chain[: position[node]]
                break  # `node` now has depth -1: the images leading into the cycle too
            position[node] = len(chain)
            chain.append(node)
            node = images[node]
        below = depth.get(node, 0) if node is not None and node in images else 0
        for n in reversed(chain):
            below = -1 if below < 0 else below + 1
            depth[n] = below
            if below > MAX_BASE_DEPTH and not too_deep:
                too_deep.append(
                    f"{source}: image {show(n)}, field 'base': chain of {below:,} bases is deeper"
                    f" than {MAX_BASE_DEPTH} (Docker stacks at most ~128 layers)"
                )
    return out + too_deep


def load_manifest(path: str | Path, repo: str | Path | None = None) -> Manifest:
    """Read and validate a manifest file; paths are checked against `repo` (default: its folder)."""
    path = Path(path)
    root = Path(repo) if repo is not None else path.parent
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: manifest not found (create images.yaml or pass --manifest)"
        ) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        size = path.stat().st_size
        raise ManifestError(
            f"{path}: {size / 2**20:.1f} MB; a manifest may be at most"
            f" {MAX_MANIFEST_BYTES // 2**20} MB"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_manifest(text, str(path), RepoPaths(root))
