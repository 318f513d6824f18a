"""`Project`: the Dagster-free core of build-assets, made once from one `Settings`.

It owns the rules every adapter (CLI, Dagster assets, sensor, async launch, `status`,
`demo`) relies on: versions at the working tree or at a ref, the targets (image / function)
and their names, the one stale rule, "what is built" (the registry), image URIs, the builder
and the deployer. Adapters translate; they decide nothing of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from build_assets.core.targets import Target, resync_targets, select, stale_targets, targets_of
from build_assets.settings import Settings

if TYPE_CHECKING:
    from build_assets.core.model import Manifest
    from build_assets.core.versioning import ImageVersion, VersionSet
    from build_assets.engine.builders.base import Builder, BuildRequest
    from build_assets.engine.deploy import Deployer
    from build_assets.engine.lease import LeaseStore
    from build_assets.engine.provenance import ProvenanceCache
    from build_assets.engine.records import BuildRecords
    from build_assets.engine.scheduler import BuildScheduler

_UNSET: Any = object()
LOOKUP_THREADS = 16  # registry / Lambda look-ups in flight at once


class Project:
    """One monorepo, one registry, one backend."""

    def __init__(self, settings: Settings, *, builder: Builder | None = None) -> None:
        self.settings = settings
        self._builder = builder
        self._manifest: Manifest | None = None  # names repositories (of the last versions)

    @classmethod
    def from_env(cls, **explicit: Any) -> Project:
        """A project from explicit settings (None = not given) over the environment."""
        return cls(Settings.resolve(**explicit))

    # -- versions and targets ---------------------------------------------------------------

    def versions(self, ref: str | None = _UNSET) -> VersionSet:
        """Versions at `ref` (default: the configured ref), else of the working tree."""
        from build_assets.core.versioning import commit_versions, worktree_versions

        ref = self.settings.ref if ref is _UNSET else ref
        if ref:
            versions = commit_versions(self.settings.repo, ref, self.settings.manifest)
        else:
            versions = worktree_versions(self.settings.repo, self.settings.manifest)
        self._manifest = versions.manifest
        return versions

    @staticmethod
    def targets(versions: VersionSet) -> list[Target]:
        """Every image (dependency order) and every Lambda function of `versions`."""
        return targets_of(versions)

    def select(self, versions: VersionSet, names: Iterable[str]) -> list[Target]:
        """Targets named on a command line; one clear line for an unknown name."""
        return select(self.targets(versions), names)

    # -- registry -----------------------------------------------------------------------------

    @property
    def registry(self) -> str:
        return self.settings.require_registry()

    def repository(self, image: str) -> str:
        """Repository of an image: '<registry prefix>/<name>', the name from the manifest's
        `naming.repository` / per-image `repository` template (as `bootstrap` names them)."""
        if self._manifest is None:
            from build_assets.core.manifest import load_manifest

            self._manifest = load_manifest(self.settings.manifest, self.settings.repo)
        return self._manifest.repository_uri(self.registry, image, self.settings.env)

    def request_for(
        self, image: ImageVersion, base_uri: str | None = None, previous_tag: str | None = None
    ) -> BuildRequest:
        """What a builder needs to build (or look up) one image version."""
        from build_assets.engine.builders.base import make_request

        return make_request(image, self.repository(image.name), base_uri, previous_tag)

    def builder(self) -> Builder:
        """The builder of the configured backend (made once)."""
        if self._builder is None:
            self._builder = self._make_builder()
        return self._builder

    def _make_builder(self) -> Builder:
        s = self.settings
        if s.backend == "codebuild":
            from build_assets.aws.clients import aws_errors, bucket_name, make_session
            from build_assets.engine.builders.codebuild import CodeBuildBuilder

            session = make_session()
            with aws_errors("resolve", "the context bucket"):
                bucket = bucket_name(session, s.env, s.bucket)  # same default as bootstrap
            return CodeBuildBuilder(bucket=bucket, env=s.env, session=session)
        from build_assets.engine.builders.local import LocalDockerBuilder

        return LocalDockerBuilder(
            work_dir=s.home / "local-builds",
            max_parallel=s.max_concurrent_builds or s.local_parallel,
        )

    def built_digests(self, versions: VersionSet, names: Iterable[str] | None = None):
        """Image name -> digest of its current tag in the registry (None: not built)."""
        builder = self.builder()
        images = [versions[n] for n in names] if names is not None else list(versions)
        requests = [self.request_for(img) for img in images]
        from build_assets.engine.registry import RegistryUnreachable

        try:
            with ThreadPoolExecutor(max_workers=min(LOOKUP_THREADS, max(1, len(requests)))) as pool:
                digests = list(pool.map(builder.existing_digest, requests))
        except RegistryUnreachable:  # one wording for every command, naming the fix
            from build_assets.engine.preflight import registry_down
            from build_assets.errors import UserError

            raise UserError(registry_down(self.registry)) from None
        return {img.name: d for img, d in zip(images, digests, strict=True)}

    def pinned_uri(self, image: str, digest: str) -> str:
        return f"{self.repository(image)}@{digest}"

    # -- functions ------------------------------------------------------------------------------

    def running_images(self, functions: Iterable[str]) -> dict[str, str | None]:
        """Function -> the image URI it runs now, behind its alias when the manifest gives it
        one (None: the function or alias does not exist)."""
        from build_assets.engine.function_deploy import running_images

        return running_images(self, functions)

    def manifest(self) -> Manifest:
        """The manifest (of the last versions computed, else loaded now)."""
        if self._manifest is None:
            from build_assets.core.manifest import load_manifest

            self._manifest = load_manifest(self.settings.manifest, self.settings.repo)
        return self._manifest

    @functools.cache  # noqa: B019 - one client per project
    def _lambda_client(self):
        from build_assets.aws.clients import make_client

        return make_client("lambda")

    def deployer(self, media_type: Callable[[str], str | None] | None = None) -> Deployer:
        """Points functions at images (creates missing ones on the local stack only);
        `media_type` reads an image's manifest type (default: from its registry)."""
        from build_assets.engine.deploy import Deployer

        return Deployer(
            self._lambda_client(),
            create_missing=self.settings.backend == "local",
            role_arn=self.settings.lambda_role,
            media_type=media_type,
        )

    # -- the stale rule ---------------------------------------------------------------------

    def stale(
        self,
        versions: VersionSet,
        targets: Iterable[Target] | None = None,
        recorded: Mapping[Target, str | None] | None = None,
    ) -> list[Target]:
        """Targets whose current version is not built (images) or not deployed (functions),
        asking the registry and Lambda — the same answer on every machine. With `recorded`
        (target -> the version its last materialization recorded, e.g. Dagster's code
        version), also the targets recorded at another version (`resync_targets`), in
        target order."""
        targets = self.targets(versions) if targets is None else list(targets)
        images = {t.image for t in targets}
        digests = self.built_digests(versions, [i.name for i in versions if i.name in images])
        running = self.running_images(t.name for t in targets if not t.is_image)
        stale = set(stale_targets(targets, digests, running, self.repository))
        stale.update(resync_targets(targets, recorded or {}))
        from build_assets.engine.function_deploy import settle_stale  # deploy: none, holds

        return settle_stale(self, versions, [t for t in targets if t in stale], digests)

    def preflight(self, check: str, *, functions: bool, images: Iterable[str] = ()) -> None:
        """`engine.preflight.<check>` (for_materialize, for_status) for this project's backend
        and registry, with the AWS endpoint when `functions` are involved and, on the codebuild
        backend, the ECR repositories of the `images` to build: one UserError with a line per
        environment fault, within seconds."""
        from build_assets.engine import preflight

        local = self.settings.backend == "local"
        extra: dict[str, Any] = {"aws_endpoint_url": self.settings.aws_endpoint_url}
        if local and check == "for_materialize":  # a test double of the builder uses nothing
            local = getattr(self.builder(), "uses_local_engine", False)
        if check == "for_materialize":
            extra["docker_host"] = self.settings.docker_host
            extra["docker_tls_verify"] = bool(self.settings.docker_tls_verify)
        if check == "for_materialize" and self.settings.backend == "codebuild":
            extra |= {"ecr": [self.repository(i) for i in images], "env": self.settings.env}
        getattr(preflight, check)(
            self.registry,
            local=local,
            functions=functions,
            home=self.settings.home,
            **extra,
        )

    # -- build records and provenance (local caches of the registry) ---------------------------

    def build_records(self) -> BuildRecords:
        """The local build records; each success also publishes its provenance to the registry."""
        from build_assets.engine.provenance import Publisher
        from build_assets.engine.records import BuildRecords

        registry = self.settings.registry
        publish = Publisher(registry, self.repository) if registry else None
        return BuildRecords(self.settings.records_path, publish=publish)

    def provenance_cache(self) -> ProvenanceCache:
        """Provenance blobs fetched from the registry, by digest (deletable)."""
        from build_assets.engine.provenance import ProvenanceCache

        return ProvenanceCache(self.settings.home / "provenance")

    def leases(self) -> LeaseStore:
        """Build leases: PostgreSQL when `lease_url` is set (every machine), else this one's."""
        from build_assets.engine.lease import open_store

        return open_store(self.settings.lease_url, self.settings.home)

    def scheduler(self, *, run_id: str | None = None, on_event=None) -> BuildScheduler:
        from build_assets.engine.scheduler import BuildScheduler

        return BuildScheduler(
            self.builder(),
            self.registry,
            max_concurrent=self.settings.concurrency,
            records=self.build_records(),
            run_id=run_id,
            on_event=on_event,
            leases=self.leases(),
            env=self.settings.env,
            early_start=self.settings.early_start == "on",
        )
