"""The manifest's behaviour without pydantic, and a validated manifest kept in the git folder.

`ImageSpecMethods` / `ManifestMethods` are the methods of `core.manifest`'s models (which
inherit them); `FrozenManifest` carries the same fields as plain attributes. `load_validated`
answers `load_manifest` with a FrozenManifest when these exact bytes, under the same name,
passed validation before with this code, and every path the manifest names is still there
(the only part of validation that depends on anything but the bytes): a `plan` of an edited
tree then imports neither pydantic nor a YAML parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from build_assets.core.lock import is_external

if TYPE_CHECKING:
    from build_assets.core.manifest import Manifest

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 4
_repr.maxlevel = 2


def show(value: Any, limit: int = 60) -> str:
    """`value` as it appears in a one-line message: quoted, escaped and shortened."""
    if not isinstance(value, str):
        return _repr.repr(value)
    text = value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[: limit - 1]}…' ({len(value):,} characters)"


class ImageSpecMethods:
    """What an image entry computes from its fields (`manifest.ImageSpec`, `FrozenSpec`)."""

    if TYPE_CHECKING:  # the fields, declared by the classes using this (pydantic: no fields)
        dockerfile: str
        source_paths: tuple[str, ...]
        build_args: dict[str, str]
        base: str | None
        lambda_entries: tuple[Any, ...]  # function names or {name, alias, deploy}

    @property
    def lambdas(self) -> tuple[str, ...]:
        """The names of the image's Lambda functions, in manifest order."""
        from build_assets.core.functions import entry_name

        return tuple(entry_name(e) for e in self.lambda_entries)

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is built (hashed into the version)."""
        return {
            "dockerfile": self.dockerfile,
            "source_paths": sorted({p.rstrip("/") for p in self.source_paths}),
            "build_args": dict(sorted(self.build_args.items())),
            "base": self.base,
            **{k: v for k in ("base_arg",) if (v := getattr(self, k)) is not None},
        }

    def context_roots(self) -> list[str]:
        """Repo-relative paths whose files make up the build context."""
        return [self.dockerfile, *(p.rstrip("/") for p in self.source_paths)]


class ManifestMethods:
    """What a manifest computes from its fields (`manifest.Manifest`, `FrozenManifest`)."""

    if TYPE_CHECKING:
        images: dict[str, Any]  # name -> ImageSpec | FrozenSpec
        platform: str | None
        dockerignore: str | Literal[False] | None
        naming: Any

    def platform_of(self, name: str) -> str | None:
        """The platform an image is built for (its own, else the manifest's), if any."""
        return self.images[name].platform or self.platform

    def dockerignore_of(self, name: str) -> str | Literal[False] | None:
        """The ignore file an image's entry names (False: none), else None (Docker's rule)."""
        spec = self.images[name].dockerignore
        return spec if spec is not None else self.dockerignore

    def project_name(self, name: str, env: str) -> str:
        """The CodeBuild project of an image in an environment."""
        template = self.images[name].codebuild_project or self.naming.codebuild_project
        return template.format(image=name, env=env)

    def repository_name(self, name: str, env: str = "") -> str:
        """The registry repository of an image (ECR repository name)."""
        spec = self.images.get(name)
        template = (spec.repository if spec else None) or self.naming.repository
        return template.format(image=name, env=env)

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


class RepoPaths:
    """Checks manifest paths against a working tree: they must exist, and no folder on the
    way may be a symlink (git sees no files through one: the context would silently lack
    them, or the path would lead out of the repository)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = os.path.realpath(root)
        self._links: dict[str, str | None] = {}  # folder -> problem, per folder prefix

    def __call__(self, path: str) -> bool | str:
        parts = path.split("/")
        for i in range(1, len(parts)):
            problem = self._folder_problem("/".join(parts[:i]))
            if problem:
                return problem
        return os.path.lexists(self.root / path)

    def _folder_problem(self, folder: str) -> str | None:
        if folder not in self._links:
            full = self.root / folder
            problem = None
            if os.path.islink(full):
                target = os.path.realpath(full)
                inside = os.path.commonpath([self._real_root, target]) == self._real_root
                if not inside:
                    problem = (
                        f"leads out of the repository through the symlink '{folder}'"
                        f" (-> {show(os.readlink(full))[1:-1]})"
                    )
                else:
                    real = os.path.relpath(target, self._real_root)
                    problem = (
                        f"goes through the symlink '{folder}': git sees no files there; use"
                        f" the real path under '{real}'"
                    )
            self._links[folder] = problem
        return self._links[folder]


class _Fields:
    """Plain attributes of a nested model (naming, lifecycle, codebuild options)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


# ImageSpec fields typed as tuples (JSON gives lists back); tests check this is all of them
TUPLE_FIELDS = ("source_paths", "lambda_entries", "allow_secrets", "owners")


class FrozenSpec(ImageSpecMethods):
    """An image entry of a validated manifest, its fields as plain attributes."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)
        for name in TUPLE_FIELDS:
            setattr(self, name, tuple(fields[name]))
        codebuild = fields["codebuild"]
        self.codebuild = None if codebuild is None else _Fields(codebuild)


class FrozenManifest(ManifestMethods):
    """A validated manifest (`Manifest.model_dump()` of it) without pydantic."""

    def __init__(self, dump: dict[str, Any]) -> None:
        self.__dict__.update(dump)
        self.images = {name: FrozenSpec(spec) for name, spec in dump["images"].items()}
        self.naming = _Fields(dump["naming"])
        self.lifecycle = _Fields(dump["lifecycle"])
        self.publish = _Fields(dump["publish"])


_VALIDATORS = (
    "manifest.py",
    "manifestview.py",
    "safeyaml.py",
    "lock.py",
    "naming.py",
    "functions.py",
)
_CAP = 4 * 1024 * 1024  # bytes read here; a larger manifest is refused by validation


def _code() -> bytes:
    """The code that validates: a cached verdict of other code is never used. Besides ours,
    the releases of pydantic and PyYAML (their version files, found without importing them)."""
    h = hashlib.sha256()
    for name in _VALIDATORS:
        h.update(Path(__file__).with_name(name).read_bytes())
    for package, version_file in (("pydantic", "version.py"), ("yaml", "__init__.py")):
        spec = importlib.util.find_spec(package)
        origin = spec.origin if spec is not None else None
        with contextlib.suppress(OSError, TypeError):
            h.update(Path(origin).with_name(version_file).read_bytes())  # type: ignore[arg-type]
    return h.digest()


def _paths_hold(manifest: FrozenManifest, root: Path) -> bool:
    """True when every path the manifest names passes validation's check (`RepoPaths`)."""
    exists = RepoPaths(root)
    wanted = {p.rstrip("/") for s in manifest.images.values() for p in s.context_roots()}
    return all(exists(p) is True for p in sorted(wanted | set(manifest.ignore_paths())))


def load_validated(
    path: Path, root: Path, git_dir: Path, prepare: Callable[[], object] | None = None
) -> Manifest | FrozenManifest:
    """`manifest.load_manifest(path, root)`, from the cache in `git_dir` when it holds the
    validated manifest of these bytes (see the module's docstring); a manifest validated
    here is remembered there. `prepare`: called before validating (the cache missed)."""
    from build_assets.core import versioncache

    try:
        with path.open("rb") as fh:
            data = fh.read(_CAP + 1)
        key = versioncache.validated_key(str(path), data, _code())
    except OSError:
        data, key = b"", None
    dump = None if key is None else versioncache.load_validated(git_dir, key)
    if dump is not None:
        try:
            frozen = FrozenManifest(dump)
        except (KeyError, TypeError, AttributeError):
            frozen = None  # not a dump this code wrote: validated again
        if frozen is not None and _paths_hold(frozen, root):
            return frozen
    if prepare is not None:
        prepare()
    from build_assets.core.manifest import load_manifest, parse_manifest

    try:
        text = data.decode("utf-8") if key is not None and len(data) <= _CAP else None
    except UnicodeDecodeError:
        text = None
    if text is None:  # unreadable, too large or not UTF-8: load_manifest says which
        return load_manifest(path, root)
    manifest = parse_manifest(text, str(path), RepoPaths(root))
    versioncache.save_validated(git_dir, key, manifest.model_dump())  # type: ignore[arg-type]
    return manifest
