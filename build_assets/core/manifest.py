"""`images.yaml`: the typed, validated model of which images a monorepo builds.

Every problem is reported as one line naming the file, the image and the field, and all
problems are reported at once (`ManifestError.lines`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from build_assets.errors import ManifestError

NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
FUNCTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BUILD_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_BUILD_ARGS = {"BASE_IMAGE"}


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


class ImageSpec(BaseModel):
    """One image of the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dockerfile: str
    source_paths: tuple[str, ...] = ()
    base: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    lambdas: tuple[str, ...] = Field(default=(), alias="lambda")
    codebuild: CodeBuildOptions | None = None

    @field_validator("dockerfile")
    @classmethod
    def _normalise_dockerfile(cls, v: str) -> str:
        return _normalise(v)

    @field_validator("source_paths")
    @classmethod
    def _normalise_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_normalise(p) for p in v)

    @field_validator("lambdas", mode="before")
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

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is built (hashed into the version)."""
        return {
            "dockerfile": self.dockerfile,
            "source_paths": sorted({p.rstrip("/") for p in self.source_paths}),
            "build_args": dict(sorted(self.build_args.items())),
            "base": self.base,
        }

    def context_roots(self) -> list[str]:
        """Repo-relative paths whose files make up the build context."""
        return [self.dockerfile, *(p.rstrip("/") for p in self.source_paths)]


class Manifest(BaseModel):
    """All images of a monorepo, in dependency order (bases first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, ImageSpec]
    source: str = "images.yaml"

    def order(self) -> list[str]:
        """Image names, every base before its dependents (stable: manifest order otherwise)."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            base = self.images[name].base
            if base:
                visit(base)
            seen.add(name)
            done.append(name)

        for name in self.images:
            visit(name)
        return done

    def dependents(self, name: str) -> list[str]:
        """Images built on `name`, directly or not, in dependency order."""
        out: set[str] = set()
        for n in self.order():
            base = self.images[n].base
            if base == name or base in out:
                out.add(n)
        return [n for n in self.order() if n in out]

    def all_paths(self) -> list[str]:
        """Every path any image's context draws from."""
        return sorted({p for spec in self.images.values() for p in spec.context_roots()})


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present
    """A YAML loader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges; explicit keys may override merged ones
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts[:1] == ["images"] and len(parts) >= 2:
        rest = ".".join(parts[2:])
        return f"image '{parts[1]}'" + (f", field '{rest}'" if rest else "")
    return "field '" + ".".join(parts) + "'"


def _pydantic_lines(source: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        where = _field_path(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            key = err["loc"][-1]
            where = _field_path(tuple(err["loc"][:-1]))
            lines.append(f"{source}: {where}: unknown key '{key}'")
        elif err["type"] == "missing":
            lines.append(f"{source}: {where}: required")
        else:
            lines.append(f"{source}: {where}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _check_path(value: str) -> str | None:
    p = PurePosixPath(value)
    if not value or value.startswith("/") or ".." in p.parts or "\\" in value:
        return "must be a relative path inside the repository"
    return None


def parse_manifest(
    text: str, source: str, path_exists: Callable[[str], bool] | None = None
) -> Manifest:
    """Parse and fully validate manifest text; `path_exists` checks dockerfiles/source_paths."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ManifestError(f"{source}:{line} invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: invalid YAML: {exc}") from None

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
            lines += [p for p in more if p not in lines]
        raise ManifestError(f"{source}: invalid", lines=lines) from None

    problems = _semantic_problems(manifest, source, path_exists)
    if problems:
        raise ManifestError(problems[0], lines=problems)
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
    path_exists: Callable[[str], bool] | None,
    skip: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    problems: list[str] = []
    functions: dict[str, str] = {}
    for name, spec in manifest.images.items():
        if name in skip:
            continue
        where = f"{source}: image '{name}'"
        if not NAME_RE.match(name):
            problems.append(
                f"{where}: bad name (use lowercase letters, digits and single '-', e.g. 'base-api')"
            )
        if spec.base is not None and spec.base not in manifest.images:
            problems.append(f"{where}, field 'base': unknown image '{spec.base}'")
        for field, values in (
            ("dockerfile", [spec.dockerfile]),
            ("source_paths", spec.source_paths),
        ):
            for value in values:
                bad = _check_path(value)
                if bad:
                    problems.append(f"{where}, field '{field}': '{value}' {bad}")
                elif path_exists is not None and not path_exists(value.rstrip("/")):
                    problems.append(f"{where}, field '{field}': '{value}' does not exist")
        for key in spec.build_args:
            if not BUILD_ARG_RE.match(key):
                problems.append(f"{where}, field 'build_args': bad argument name '{key}'")
            elif key in RESERVED_BUILD_ARGS:
                problems.append(
                    f"{where}, field 'build_args': '{key}' is set from 'base', remove it"
                )
        for fn in spec.lambdas:
            if not FUNCTION_RE.match(fn):
                problems.append(f"{where}, field 'lambda': bad function name '{fn}'")
            elif fn in functions:
                problems.append(
                    f"{where}, field 'lambda': function '{fn}' is already deployed by image"
                    f" '{functions[fn]}'"
                )
            else:
                functions[fn] = name
    problems.extend(_cycle_problems(manifest, source))
    return problems


def _cycle_problems(manifest: Manifest, source: str) -> list[str]:
    reported: set[frozenset[str]] = set()
    out = []
    for start in manifest.images:
        chain = [start]
        node = manifest.images[start].base
        while node is not None and node in manifest.images:
            if node in chain:
                cycle = chain[chain.index(node) :]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    ring = " -> ".join([*cycle, node])
                    out.append(f"{source}: image '{node}', field 'base': cycle of bases {ring}")
                break
            chain.append(node)
            node = manifest.images[node].base
    return out


def load_manifest(path: str | Path, repo: str | Path | None = None) -> Manifest:
    """Read and validate a manifest file; paths are checked against `repo` (default: its folder)."""
    path = Path(path)
    root = Path(repo) if repo is not None else path.parent
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: manifest not found (create images.yaml or pass --manifest)"
        ) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_manifest(text, str(path), lambda p: (root / p).exists())
