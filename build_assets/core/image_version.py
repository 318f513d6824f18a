"""One image's computed version (`ImageVersion`) and the versions of a manifest at one state
of the repository (`VersionSet`); what a version was hashed from is resolved on first use."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from build_assets.core.context import BuildContext, ContextFile, folders_of
from build_assets.core.dockerfile import Dockerfile
from build_assets.core.dockerfile import parse as parse_dockerfile
from build_assets.core.lock import ExternalBase, pin_literal_froms, pinned_reference
from build_assets.core.model import is_external, tag_for

if TYPE_CHECKING:
    from build_assets.core.context_selection import ContextSelection
    from build_assets.core.gitrepo import GitObjectReader, Snapshot, WorktreeReader
    from build_assets.core.ignore import DockerIgnore
    from build_assets.core.model import ImageSpec, Manifest

DEFAULT_BASE_ARG = "BASE_IMAGE"


class ImageVersion:
    """The computed version of one image and the context it was computed from.

    `files` and `context` are made on first use: computing versions never needs them.
    """

    def __init__(
        self,
        name: str,
        spec: ImageSpec,
        version: str,
        base_version: str | None,
        resolve: Callable[[], tuple[Snapshot, ContextSelection]],
        file_count: int | None = None,
        identity: dict | Callable[[], dict] | None = None,
        base_arg: str | Callable[[], str | None] | None = None,
        platform: str | None = None,
        ignore: DockerIgnore | Callable[[], DockerIgnore] | None = None,
        project_template: str | None = None,
        dockerfile: Dockerfile | Callable[[], Dockerfile] | None = None,
        externals: tuple[ExternalBase, ...] | Callable[[], tuple[ExternalBase, ...]] = (),
        pins: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._externals = externals
        self.pins = pins or {}  # external base reference -> digest pinned in bases.lock
        self._dockerfile = dockerfile
        self.spec = spec
        self.version = version
        self.base_version = base_version
        self._resolve = resolve  # the snapshot and selection this version was hashed from
        self._file_count = file_count
        self._identity = identity
        self._base_arg = base_arg
        self._ignore = ignore
        self._project_template = project_template
        self.platform = platform  # linux/amd64 | linux/arm64 | None (the engine's own)

    def __repr__(self) -> str:
        return f"ImageVersion({self.name!r}, {self.tag!r})"

    @property
    def tag(self) -> str:
        return tag_for(self.version)

    @property
    def base(self) -> str | None:
        """The image of the manifest this one is built on (an external `base:` is not one)."""
        base = self.spec.base
        return None if base is None or is_external(base) else base

    @functools.cached_property
    def externals(self) -> tuple[ExternalBase, ...]:
        """The external bases this image is built on (`core.lock`)."""
        return tuple(self._externals() if callable(self._externals) else self._externals)

    @property
    def pinned_args(self) -> dict[str, str]:
        """Build args that carry an external base: its pinned `repo@sha256:…` when the lock
        has it, else the reference itself (an unpinned external manifest `base:`). The arg
        that receives the manifest base only ever carries that base."""
        out: dict[str, str] = {}
        for ext in self.externals:
            if ext.arg is None:
                continue  # a literal FROM: pinned in the shipped Dockerfile (`context`)
            if ext.line is not None and self.spec.base is not None and ext.arg == self.base_arg:
                continue  # never the lock entry of the arg's default over the manifest base
            if ext.reference in self.pins:
                out[ext.arg] = pinned_reference(ext.reference, self.pins[ext.reference])
            elif ext.line is None:
                out[ext.arg] = ext.reference
        return out

    @property
    def lambdas(self) -> tuple[str, ...]:
        return self.spec.lambdas

    @functools.cached_property
    def identity(self) -> dict:
        """The entry as hashed (manifest fields plus defaults and ignore file in force)."""
        value = self._identity() if callable(self._identity) else self._identity
        return value if value is not None else self.spec.identity()

    @property
    def project_template(self) -> str | None:
        """The manifest's CodeBuild project name template for this image, when not default."""
        return self._project_template

    @functools.cached_property
    def dockerfile(self) -> Dockerfile:
        """This image's Dockerfile, parsed (read once; empty when it cannot be read)."""
        value = self._dockerfile() if callable(self._dockerfile) else self._dockerfile
        if value is None:
            snapshot, _ = self._resolve()
            value = parse_dockerfile(snapshot.read_text(self.spec.dockerfile) or "")
        return value

    @functools.cached_property
    def base_arg(self) -> str:
        """The build arg that receives the base: `base_arg`, else the first FROM's arg."""
        value = self._base_arg() if callable(self._base_arg) else self._base_arg
        return value or DEFAULT_BASE_ARG

    @property
    def rules(self) -> DockerIgnore | None:
        """The rules of the ignore file in force for this image (None: no ignore file)."""
        ignore = self._ignore() if callable(self._ignore) else self._ignore
        return ignore or None

    def exclusion(self, path: str) -> str | None:
        """Why `path`, a file of the repo under this image's paths, is not in its context
        ('excluded by .dockerignore:3 `*`'), or None when it is in it or not there at all."""
        snapshot, selection = self._resolve()
        i = snapshot.index_of(path)
        if i is None or i not in selection.excluded:
            return None
        ignore = self._ignore() if callable(self._ignore) else self._ignore
        return (ignore.explain(path) if ignore else None) or "excluded by the ignore file"

    def inclusion(self, path: str) -> str | None:
        """The ignore rule that includes `path` in the context ('included by …'), if any."""
        ignore = self._ignore() if callable(self._ignore) else self._ignore
        return ignore.explain(path) if ignore else None

    @property
    def file_count(self) -> int:
        if self._file_count is None:
            self._file_count = self._resolve()[1].count()
        return self._file_count

    @property
    def reader(self) -> WorktreeReader | GitObjectReader:
        """Reads the content of this image's context files (working tree or git objects)."""
        return self._resolve()[0].reader

    def records(self) -> list[str]:
        """The context as canonical records (`<mode> <blob> 0\t<path>`): no per-file objects."""
        snapshot, selection = self._resolve()
        return selection.listing(snapshot.records).split("\0")[:-1]

    @functools.cached_property
    def files(self) -> tuple[ContextFile, ...]:
        snapshot, selection = self._resolve()
        return tuple(snapshot.file(i) for i in selection.indices())

    def files_where(self, wanted: Callable[[str], bool]) -> list[ContextFile]:
        """The context files whose path `wanted` accepts, testing paths only (no per-file
        objects for the others: cheap on large contexts)."""
        snapshot, selection = self._resolve()
        paths = snapshot.paths
        return [snapshot.file(i) for i in selection.indices() if wanted(paths[i])]

    def files_screened(self, screen: Callable[[list[str]], list[int]]) -> list[ContextFile]:
        """The context files among the indices `screen` picks from the snapshot's sorted
        paths; the screen runs once per snapshot (images share it), not once per context."""
        snapshot, selection = self._resolve()
        hits = snapshot.screened(screen)
        out = []
        for lo, hi in selection.ranges:
            inside = hits[bisect.bisect_left(hits, lo) : bisect.bisect_left(hits, hi)]
            out.extend(snapshot.file(i) for i in inside if i not in selection.excluded)
        return out

    @property
    def dockerfile_shipped(self) -> bool:
        """Whether the build context holds the Dockerfile (not when the ignore file excludes
        it: Docker reads it for the build, but COPY never sees it)."""
        return self._resolve()[1].unshipped is None

    @functools.cached_property
    def context(self) -> BuildContext:
        """What the build ships: the files Docker would ship, and the Dockerfile to build
        from with the literal FROMs of locked external bases pinned to their digests."""
        snapshot, selection = self._resolve()
        pins = {
            ext.reference: pinned_reference(ext.reference, self.pins[ext.reference])
            for ext in self.externals
            if ext.arg is None and ext.line is not None and ext.reference in self.pins
        }
        edit = None
        if pins:
            where, args = self.spec.dockerfile, dict(self.spec.build_args)
            edit = functools.partial(pin_literal_froms, pins=pins, build_args=args, where=where)
        at = snapshot.index_of(self.spec.dockerfile)
        files = self.files
        if selection.unshipped is not None:
            files = tuple(f for f in files if f.path != self.spec.dockerfile)
        return BuildContext(
            files=files,
            dirs=folders_of(files, selection.empty_dirs),
            reader=snapshot.reader,
            dockerfile=snapshot.file(at) if at is not None else None,
            dockerfile_edit=edit,
        )


@dataclass(frozen=True)
class VersionSet:
    """Versions of every image of a manifest at one state of the repo."""

    manifest: Manifest
    images: dict[str, ImageVersion]  # in dependency order
    commit: str | None  # None for the working tree
    root: Path
    note: str | None = None  # said once by `plan` (e.g. how the manifest at a ref was found)

    def __getitem__(self, name: str) -> ImageVersion:
        return self.images[name]

    def __iter__(self):
        return iter(self.images.values())
