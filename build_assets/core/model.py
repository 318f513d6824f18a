"""The manifest at run time: one set of plain, frozen classes, standard library only.

`core.schema` (pydantic) validates a document and produces a `Manifest`; the validated-model
cache (`core.validated_cache`) stores `Manifest.to_document()` and restores it with
`Manifest.from_document`; `plan`'s fast paths build the same class from the raw YAML document.
Every rule they share lives here, once: dependency order, dependents, resource names, the
ignore file in force, the external-base test, the tag and the version scheme.

A field is declared once, on its class below (`name: type = field(default, ...)`): `field`
says how it is read from a document (`load`, its YAML `key` when not its name) and written
back (`dump`). The classes are plain slotted ones (`Record`): no code is generated at
import, so a cached `plan` pays next to nothing for them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any, Literal

from build_assets.core.record import Record, dump, field, load

SCHEME = "build-assets/v1"  # hashed into every version: changing it changes them all
TAG_PREFIX = "git-"
DEFAULT_PROJECT_NAME = "{image}-{env}-img-builder"
DEFAULT_REPOSITORY_NAME = "{image}"
DEFAULT_SSM = "/build-assets/{env}/{image}/image-uri"
DOCKERIGNORE = ".dockerignore"
PLATFORMS = ("linux/amd64", "linux/arm64")
MAX_MANIFEST_BYTES = 2 * 1024 * 1024  # far above any real manifest (200 images is ~40 KB)


def tag_for(version: str) -> str:
    """The image tag of a version: 'git-' + its first 12 hex digits."""
    return TAG_PREFIX + version[:12]


def resource_name(template: str, image: str, env: str) -> str:
    """A repository or CodeBuild project name from its naming template (`{image}`, `{env}`):
    the one rule `bootstrap`, the builders, `plan` and the deploys all name resources by."""
    return template.format(image=image, env=env)


def is_external(base: str) -> bool:
    """True for a manifest `base` naming a registry image rather than an image of the manifest
    (image names hold neither '/' nor ':')."""
    return "/" in base or ":" in base


def normalise_path(path: str) -> str:
    """'./pkg/', 'pkg//sub' -> 'pkg', 'pkg/sub' (leaves '..' and absolute paths to be
    rejected by validation with the path as written)."""
    if not isinstance(path, str):
        raise TypeError(f"expected a path, got {type(path).__name__}")
    if not path or path[0] == "/" or "\\" in path:
        return path
    if path[0] != "." and path[-1] != "/" and "//" not in path and "/." not in path:
        return path  # already normal (most paths: a quick test instead of normpath)
    norm = posixpath.normpath(path)
    return path if norm.startswith("..") else norm


# -- reading a document: each converter takes the document's value, raises on a wrong type --


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"expected a string, got {type(item).__name__}")
    return tuple(value)


def _paths(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return tuple(map(normalise_path, value))


def stringify_args(value: Any) -> Any:
    """Build arg values as strings (YAML `true` -> 'true', `3` -> '3'); anything else as it
    is (validation reports it). The schema coerces with this too."""
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, item in value.items():
        if isinstance(item, bool):
            item = str(item).lower()
        elif isinstance(item, int | float):
            item = str(item)
        out[key] = item
    return out


def _build_args(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return {_text(k): _text(v) for k, v in stringify_args(value).items()}


def _ignore_file(value: Any) -> str | Literal[False] | None:
    if value is None or value is False or isinstance(value, str):
        return value
    raise TypeError(f"expected a path or false, got {type(value).__name__}")


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _options(cls: type, optional: bool = False) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        return None if optional and value is None else load(cls, value)

    return read


def _options_dump(value: Any) -> Any:
    return None if value is None else dump(value)


def _list(value: tuple) -> list:
    return list(value)


# -- the model ------------------------------------------------------------------------------


class CodeBuildOptions(Record, slots=False):  # `vars()` of it: the overrides (aws.bootstrap)
    """Per-image CodeBuild overrides."""

    compute_type: str | None = None
    timeout_minutes: int | None = None
    image: str | None = None
    fleet: str | None = None  # reserved-capacity fleet ARN: builds start without provisioning
    docker_server: str | None = None  # compute type of CodeBuild's Docker server capability


class Naming(Record):
    """Templates of AWS resource names; placeholders `{image}` and `{env}`."""

    codebuild_project: str = field(DEFAULT_PROJECT_NAME, load=_text)
    repository: str = field(DEFAULT_REPOSITORY_NAME, load=_text)


class Lifecycle(Record):
    """Registry clean-up: the newest `keep` versions per repository stay; untagged images
    expire after `untagged_days` (ECR lifecycle policy and `build-assets gc`)."""

    keep: int = 10
    untagged_days: int = 7


class Publish(Record):
    """Where each built image's digest-pinned URI is published (`ssm: false`: nowhere)."""

    ssm: str | Literal[False] = DEFAULT_SSM


class FunctionEntry(Record):
    """A `lambda:` item written as a mapping: who deploys the function, through which alias."""

    name: str
    alias: str | None = None
    deploy: Literal["direct", "none"] = "direct"


def _lambda_entries(value: Any) -> tuple[str | FunctionEntry, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise TypeError(f"expected a name or a list, got {type(value).__name__}")
    return tuple(v if isinstance(v, str) else load(FunctionEntry, v) for v in items)


def _lambda_dump(entries: tuple) -> list:
    return [e if isinstance(e, str) else dump(e) for e in entries]


class ImageSpec(Record):
    """One image of the manifest."""

    dockerfile: str = field(load=lambda v: normalise_path(_text(v)))
    source_paths: tuple[str, ...] = field((), load=_paths, dump=_list)
    base: str | None = field(None, load=_optional_text)
    build_args: dict[str, str] = field(factory=dict, load=_build_args)
    # names or FunctionEntry mappings; `lambdas` gives the names
    lambda_entries: tuple[str | FunctionEntry, ...] = field(
        (), key="lambda", load=_lambda_entries, dump=_lambda_dump
    )
    codebuild: CodeBuildOptions | None = field(
        None, load=_options(CodeBuildOptions, optional=True), dump=_options_dump
    )
    # adoption of an existing monorepo (see README "Bringing an existing monorepo")
    platform: str | None = field(None, load=_optional_text)
    base_arg: str | None = None  # build arg carrying the base (default: the first FROM's)
    # ignore file in force, or none at all
    dockerignore: str | Literal[False] | None = field(None, load=_ignore_file)
    codebuild_project: str | None = None  # name override (template allowed)
    repository: str | None = None  # name override (template allowed)
    # context paths (gitignore-style globs) that look like credentials but are meant to ship
    allow_secrets: tuple[str, ...] = field((), load=_texts, dump=_list)
    # shown in Dagster only (never hashed): asset owners (emails or `team:name`), description
    owners: tuple[str, ...] = field((), load=_texts, dump=_list)
    description: str | None = None

    @classmethod
    def from_document(cls, entry: Any) -> ImageSpec:
        """The spec of one `images:` entry (raises TypeError/KeyError on a malformed one)."""
        return load(cls, entry)

    def to_document(self) -> dict[str, Any]:
        return dump(self)

    @property
    def lambdas(self) -> tuple[str, ...]:
        """The names of the image's Lambda functions, in manifest order."""
        return tuple(e if isinstance(e, str) else e.name for e in self.lambda_entries)

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is built (hashed into the version)."""
        return {
            "dockerfile": self.dockerfile,
            "source_paths": sorted({p.rstrip("/") for p in self.source_paths}),
            "build_args": dict(sorted(self.build_args.items())),
            "base": self.base,
            **({"base_arg": self.base_arg} if self.base_arg is not None else {}),
        }

    def context_roots(self) -> list[str]:
        """Repo-relative paths whose files make up the build context."""
        return [self.dockerfile, *(p.rstrip("/") for p in self.source_paths)]


def _images(value: Any) -> dict[str, ImageSpec]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a map of image name -> entry, got {type(value).__name__}")
    return {_text(name): ImageSpec.from_document(entry) for name, entry in value.items()}


def _images_dump(images: dict[str, ImageSpec]) -> dict[str, Any]:
    return {name: dump(spec) for name, spec in images.items()}


class Manifest(Record):
    """All images of a monorepo and the manifest-wide settings."""

    images: dict[str, ImageSpec] = field(load=_images, dump=_images_dump)
    source: str = "images.yaml"
    platform: str | None = field(None, load=_optional_text)  # default
    # default of every image
    dockerignore: str | Literal[False] | None = field(None, load=_ignore_file)
    naming: Naming = field(factory=Naming, load=_options(Naming), dump=dump)
    # never part of a version
    lifecycle: Lifecycle = field(factory=Lifecycle, load=_options(Lifecycle), dump=dump)
    publish: Publish = field(factory=Publish, load=_options(Publish), dump=dump)

    @classmethod
    def from_document(cls, doc: Any, source: str | None = None) -> Manifest:
        """The model of a manifest document: the YAML mapping (`plan`'s fast paths) or
        `to_document()` of a validated model (the cache). Validates nothing beyond the types
        the rules need (raises TypeError/KeyError/ValueError); `core.schema` validates."""
        given = {} if source is None else {"source": source}
        return load(cls, doc, **given)

    def to_document(self) -> dict[str, Any]:
        """The document of this model (JSON types only): `from_document` gives it back."""
        return dump(self)

    def platform_of(self, name: str) -> str | None:
        """The platform an image is built for (its own, else the manifest's), if any."""
        return self.images[name].platform or self.platform

    def dockerignore_of(self, name: str) -> str | Literal[False] | None:
        """The ignore file an image's entry names (False: none), else None (Docker's rule)."""
        spec = self.images[name].dockerignore
        return spec if spec is not None else self.dockerignore

    def ignore_file_in_force(self, name: str, has_file: Callable[[str], bool]) -> str | None:
        """The ignore file in force for an image (None: none): the manifest's `dockerignore`
        (per image, else manifest-wide; `false`: none), else Docker's rule:
        `<Dockerfile>.dockerignore` next to the Dockerfile replaces the root `.dockerignore`.
        `has_file(path)`: whether the repository state holds that file."""
        named = self.dockerignore_of(name)
        if named is False:
            return None
        if isinstance(named, str):
            return named
        own = self.images[name].dockerfile + DOCKERIGNORE
        if has_file(own):
            return own
        return DOCKERIGNORE if has_file(DOCKERIGNORE) else None

    def project_name(self, name: str, env: str) -> str:
        """The CodeBuild project of an image in an environment."""
        template = self.images[name].codebuild_project or self.naming.codebuild_project
        return resource_name(template, name, env)

    def project_template(self, name: str) -> str | None:
        """The image's CodeBuild project template, when not the default one."""
        template = self.images[name].codebuild_project or self.naming.codebuild_project
        return None if template == DEFAULT_PROJECT_NAME else template

    def repository_name(self, name: str, env: str = "") -> str:
        """The registry repository of an image (ECR repository name); an image not in the
        manifest is named by the manifest-wide template."""
        spec = self.images.get(name)
        template = (spec.repository if spec else None) or self.naming.repository
        return resource_name(template, name, env)

    def repository_uri(self, registry: str, name: str, env: str = "") -> str:
        """'<registry prefix>/<repository>' of an image ('host[:port][/namespace]/name')."""
        return f"{registry.rstrip('/')}/{self.repository_name(name, env)}"

    def shared_repositories(self) -> dict[str, list[str]]:
        """Repository template result -> images, for repositories that more than one image
        would push to (in every environment: `{env}` is kept as it is)."""
        owners: dict[str, list[str]] = {}
        for name in self.images:
            try:
                repo = self.repository_name(name, "{env}")
            except (KeyError, IndexError, ValueError):
                continue  # a bad template, reported on its own
            owners.setdefault(repo, []).append(name)
        return {repo: names for repo, names in owners.items() if len(names) > 1}

    def ignore_paths(self) -> list[str]:
        """Ignore files named in the manifest (besides Docker's own places)."""
        named = [self.dockerignore, *(s.dockerignore for s in self.images.values())]
        return sorted({p for p in named if isinstance(p, str)})

    def external_base(self, name: str) -> str | None:
        """An image's `base` when it names a registry image (`registry/repo:tag`), else None."""
        base = self.images[name].base
        return base if base is not None and base not in self.images and is_external(base) else None

    def order(self) -> list[str]:
        """Image names, every base before its dependents (stable: manifest order otherwise).

        Iterative: walks each image's base chain up to the first placed image (a cycle, which
        validation rejects, is cut where it closes)."""
        done: list[str] = []
        placed: set[str] = set()
        bases = {name: spec.base for name, spec in self.images.items()}
        for name in bases:
            if name in placed:
                continue
            chain: list[str] = []
            on_chain: set[str] = set()
            node: str | None = name
            while node is not None and node in bases and node not in placed:
                if node in on_chain:
                    break
                chain.append(node)
                on_chain.add(node)
                node = bases[node]
            for n in reversed(chain):
                placed.add(n)
                done.append(n)
        return done

    def dependents(self, name: str) -> list[str]:
        """Images built on `name`, directly or not, in dependency order."""
        out: set[str] = set()
        order = self.order()
        for n in order:
            base = self.images[n].base
            if base == name or base in out:
                out.add(n)
        return [n for n in order if n in out]

    def all_paths(self) -> list[str]:
        """Every path any image's context draws from."""
        return sorted({p for spec in self.images.values() for p in spec.context_roots()})
