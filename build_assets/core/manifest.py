"""`images.yaml`: the typed, validated model of which images a monorepo builds.

Every problem is reported as one line naming the file, the image and the field, and all
problems are reported at once (`ManifestError.lines`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from build_assets.core import safeyaml
from build_assets.core.functions import ALIAS_RE, DEFAULT_SSM, ssm_name_problem
from build_assets.core.lock import is_external, valid_reference
from build_assets.core.manifestview import (
    ImageSpecMethods,
    ManifestMethods,
    RepoPaths,
    show,
)
from build_assets.core.naming import DEFAULT_PROJECT_NAME, DEFAULT_REPOSITORY_NAME
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
MAX_LIST = 1000  # source_paths / build_args / lambda entries of one image
MAX_BASE_DEPTH = 100  # Docker's overlay storage stacks at most ~128 layers
MAX_LINES = 50  # problems reported at once; the rest are counted
_BAD_ARG_CHARS = re.compile(r"[\x00\n\r]")


def _normalise(path: str) -> str:
    """'./pkg/', 'pkg//sub' -> 'pkg', 'pkg/sub' (leaves '..' and absolute paths to be
    rejected by validation with the path as written)."""
    if not path or path.startswith("/") or "\\" in path:
        return path
    norm = posixpath.normpath(path)
    return path if norm.startswith("..") else norm


class CodeBuildOptions(BaseModel):
    """Per-image CodeBuild overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compute_type: str | None = None
    timeout_minutes: int | None = Field(default=None, ge=5, le=2160)
    image: str | None = None
    fleet: str | None = None  # reserved-capacity fleet ARN: builds start without provisioning
    docker_server: str | None = None  # compute type of CodeBuild's Docker server capability


Platform = Literal["linux/amd64", "linux/arm64"]
PLATFORMS = ("linux/amd64", "linux/arm64")


class Naming(BaseModel):
    """Templates of AWS resource names; placeholders `{image}` and `{env}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codebuild_project: str = DEFAULT_PROJECT_NAME
    repository: str = DEFAULT_REPOSITORY_NAME


class Lifecycle(BaseModel):
    """Registry clean-up: the newest `keep` versions per repository stay; untagged images
    expire after `untagged_days` (ECR lifecycle policy and `build-assets gc`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: int = Field(default=10, ge=1, le=10000)
    untagged_days: int = Field(default=7, ge=1, le=3650)


class FunctionEntry(BaseModel):
    """A `lambda:` item written as a mapping: who deploys the function, through which alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    alias: str | None = None
    deploy: Literal["direct", "none"] = "direct"


def _entry_kind(value: Any) -> str:
    return "mapping" if isinstance(value, dict | FunctionEntry) else "name"


# a `lambda:` item: one validation error for a bad one, whichever form it has
LambdaItem = Annotated[
    Annotated[str, Tag("name")] | Annotated[FunctionEntry, Tag("mapping")],
    Discriminator(_entry_kind),
]


class Publish(BaseModel):
    """Where each built image's digest-pinned URI is published (`ssm: false`: nowhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssm: str | Literal[False] = DEFAULT_SSM


class ImageSpec(ImageSpecMethods, BaseModel):
    """One image of the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dockerfile: str
    source_paths: tuple[str, ...] = Field(default=(), max_length=MAX_LIST)
    base: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict, max_length=MAX_LIST)
    # names or FunctionEntry mappings; `lambdas` (ImageSpecMethods) gives the names
    lambda_entries: tuple[LambdaItem, ...] = Field(default=(), alias="lambda", max_length=MAX_LIST)
    codebuild: CodeBuildOptions | None = None
    # adoption of an existing monorepo (see README "Bringing an existing monorepo")
    platform: Platform | None = None
    base_arg: str | None = None  # build arg carrying the base (default: the first FROM's)
    dockerignore: str | Literal[False] | None = None  # ignore file in force, or none at all
    codebuild_project: str | None = None  # name override (template allowed)
    repository: str | None = None  # name override (template allowed)
    # context paths (gitignore-style globs) that look like credentials but are meant to ship
    allow_secrets: tuple[str, ...] = Field(default=(), max_length=MAX_LIST)
    # shown in Dagster only (never hashed): asset owners (emails or `team:name`), description
    owners: tuple[str, ...] = Field(default=(), max_length=MAX_LIST)
    description: str | None = None

    @field_validator("dockerfile")
    @classmethod
    def _normalise_dockerfile(cls, v: str) -> str:
        return _normalise(v)

    @field_validator("source_paths")
    @classmethod
    def _normalise_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_normalise(p) for p in v)

    @field_validator("lambda_entries", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("build_args", mode="before")
    @classmethod
    def _stringify_args(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for key, value in v.items():
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, int | float):
                value = str(value)
            out[key] = value
        return out


class Manifest(ManifestMethods, BaseModel):
    """All images of a monorepo, in dependency order (bases first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, ImageSpec]
    source: str = "images.yaml"
    platform: Platform | None = None  # default of every image
    dockerignore: str | Literal[False] | None = None  # default of every image
    naming: Naming = Field(default_factory=Naming)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)  # never part of a version
    publish: Publish = Field(default_factory=Publish)  # never part of a version


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) if len(str(p)) <= 60 else show(str(p))[1:-1] for p in loc]
    if parts[:1] == ["images"] and len(parts) >= 2:
        rest = ".".join(parts[2:])
        return f"image '{parts[1]}'" + (f", field '{rest}'" if rest else "")
    return "field '" + ".".join(parts) + "'"


def _pydantic_lines(source: str, exc: ValidationError) -> list[str]:
    """One line per validation error; inputs are shown shortened (never stringified whole:
    an aliased input can be huge once expanded)."""
    lines = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = tuple(err["loc"])
        if loc[2:3] == ("lambda",) and loc[4:5] in (("name",), ("mapping",)):
            loc = loc[:4] + loc[5:]  # the union's tag ('lambda.0.mapping.deploy')
            err = {**err, "loc": loc}
        where = _field_path(loc)
        if err["type"] == "extra_forbidden":
            key = err["loc"][-1]
            where = _field_path(tuple(err["loc"][:-1]))
            lines.append(f"{source}: {where}: unknown key {show(str(key))}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {where}: required")
        elif err["type"] == "too_long":
            lines.append(f"{source}: {where}: more than {MAX_LIST} entries")
        else:
            lines.append(f"{source}: {where}: {err['msg']} (got {show(err.get('input'))})")
    return lines


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
        manifest = Manifest.model_validate({**data, "source": source})
    except ValidationError as exc:
        lines = _pydantic_lines(source, exc)
        lenient = _lenient_manifest(data, source)
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


def _lenient_manifest(data: dict, source: str) -> tuple[Manifest, set[str]] | None:
    """The valid part of a manifest that failed validation (for reporting every problem)."""
    images = {}
    known = {f.alias or name for name, f in ImageSpec.model_fields.items()}
    for name, entry in data.get("images", {}).items():
        if not isinstance(entry, dict):
            continue
        try:
            images[str(name)] = ImageSpec.model_validate(
                {k: v for k, v in entry.items() if k in known}
            )
        except ValidationError:
            continue
    if not images:
        return None
    # bases that failed validation still exist as names: keep references to them quiet
    stubs = {n: ImageSpec(dockerfile="-") for n in data["images"] if str(n) not in images}
    return Manifest.model_construct(images={**images, **stubs}, source=source), set(stubs)


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
            data = fh.read(safeyaml.MAX_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: manifest not found (create images.yaml or pass --manifest)"
        ) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    if len(data) > safeyaml.MAX_BYTES:
        size = path.stat().st_size
        raise ManifestError(
            f"{path}: {size / 2**20:.1f} MB; a manifest may be at most"
            f" {safeyaml.MAX_BYTES // 2**20} MB"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_manifest(text, str(path), RepoPaths(root))
