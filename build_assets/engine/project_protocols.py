"""What the engine uses of a `build_assets.project.Project`, as typed Protocols: `Project` sits
a layer above the engine (it makes builders, schedulers and runs), so the engine names it by what
it does here. Standard library only: importing these loads no boto3.
`tests/test_structure.py` checks that `Project` has every member they name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from build_assets.core.versioning import ImageVersion, VersionSet
    from build_assets.engine.builders.base import Builder, BuildRequest
    from build_assets.engine.records import BuildRecords
    from build_assets.engine.scheduler import BuildScheduler
    from build_assets.settings import Settings


class FunctionProject(Protocol):
    """What deploying functions uses of a `Project`."""

    settings: Settings

    def manifest(self) -> Any: ...

    def deployer(self, media_type: Callable[[str], str | None] | None = None) -> Any: ...

    def _lambda_client(self) -> Any: ...


class RunProject(FunctionProject, Protocol):
    """What a build run (`engine.build_run`) uses of a `Project`."""

    @property
    def registry(self) -> str: ...

    def builder(self) -> Builder: ...

    def request_for(
        self, image: ImageVersion, base_uri: str | None = None, previous_tag: str | None = None
    ) -> BuildRequest: ...

    def built_digests(
        self, versions: VersionSet, names: Iterable[str] | None = None
    ) -> dict[str, str | None]: ...

    def build_records(self) -> BuildRecords: ...

    def scheduler(
        self, *, run_id: str | None = None, on_event: Callable[[str], None] | None = None
    ) -> BuildScheduler: ...


class RollbackProject(FunctionProject, Protocol):
    """What a rollback (`engine.rollback`) uses of a `Project`."""

    @property
    def registry(self) -> str: ...

    def versions(self) -> VersionSet: ...

    def repository(self, image: str) -> str: ...

    def build_records(self) -> BuildRecords: ...
