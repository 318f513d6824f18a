"""Deploy one function target as the manifest says (`engine.release`), honouring rollback
holds (`engine.holds`), and the stale rule's exceptions for such functions.

- `deploy: none`: never updated; the run records the drift check (does it run the image?).
- `alias:`: a version is published and the alias points at it.
- a function a rollback holds at its image's current version is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from build_assets.core.functions import FunctionSpec, function_specs
from build_assets.core.targets import Target
from build_assets.engine import release as rel
from build_assets.engine.holds import FunctionJournal
from build_assets.engine.project_protocols import FunctionProject


def journal_of(project: FunctionProject) -> FunctionJournal:
    return FunctionJournal(project.settings.home / "functions.sqlite")


class FunctionDeployer:
    """Deploys the functions of one manifest (one Lambda client, one journal)."""

    def __init__(
        self,
        project: FunctionProject,
        manifest: Any,
        media_type: Callable[[str], str | None] | None = None,
    ) -> None:
        self.project = project
        self.specs = function_specs(manifest)
        self.journal = journal_of(project)
        self.media_type = media_type  # what a builder knows of its images (else: registry)
        self._direct = None  # the project's Deployer, made at the first direct deploy

    def spec(self, target: Target) -> FunctionSpec:
        return self.specs.get(target.name) or FunctionSpec(target.name, target.image)

    def deploy(self, target: Target, uri: str) -> rel.Release:
        spec = self.spec(target)
        client = self.project._lambda_client()
        hold = self.journal.get(spec.name)
        if hold is not None and hold.holds_at(target.version):
            now = rel.running_image(client, spec.name, spec.alias)
            return rel.Release(spec.name, spec.deploy, spec.alias, uri, now, now, False, held=True)
        if spec.owned_by_infrastructure:
            return rel.drift_check(client, spec, uri)
        if spec.alias:
            local = self.project.settings.backend == "local"
            role = self.project.settings.lambda_role
            if local and not role:
                from build_assets.aws.clients import make_client
                from build_assets.engine.deploy import ensure_local_execution_role

                role = ensure_local_execution_role(make_client("iam"))
            out = rel.release_alias(
                client,
                spec,
                uri,
                create_if_missing=local,
                role_arn=role,
                media_type=self.media_type,
            )
        else:
            if self._direct is None:
                self._direct = self.project.deployer(media_type=self.media_type)
            d = self._direct.deploy(spec.name, uri)
            out = rel.Release(
                spec.name,
                spec.deploy,
                None,
                uri,
                d.new_image,
                d.previous_image,
                d.changed,
                resolved_image_uri=d.resolved_image_uri,
            )
        if out.changed:
            self.journal.record(spec.name, out.previous_image, uri, out.version)
        if hold is not None:  # the image moved on: the rollback no longer holds
            self.journal.release(spec.name)
        return out


def settle_stale(
    project: FunctionProject,
    versions: Any,
    stale: Iterable[Target],
    digests: Mapping[str, str | None],
) -> list[Target]:
    """`stale` without the functions nothing should deploy: those infrastructure code
    deploys (`deploy: none`) once their image is built (their drift check runs with their
    image's builds), and those a rollback holds at their image's current version."""
    stale = list(stale)
    if all(t.is_image for t in stale):
        return stale
    specs = function_specs(versions.manifest)
    holds = journal_of(project).holds()
    out = []
    for t in stale:
        spec = specs.get(t.name)
        if not t.is_image and spec is not None:
            if spec.owned_by_infrastructure and digests.get(t.image) is not None:
                continue
            hold = holds.get(t.name)
            if hold is not None and hold.holds_at(t.version):
                continue
        out.append(t)
    return out


def running_images(project: FunctionProject, functions: Iterable[str]) -> dict[str, str | None]:
    """Function -> what it runs: behind its alias when the manifest gives one, else $LATEST."""
    from concurrent.futures import ThreadPoolExecutor

    functions = list(functions)
    if not functions:
        return {}
    manifest = project.manifest()
    specs = function_specs(manifest)
    client = project._lambda_client()

    def one(fn: str) -> str | None:
        spec = specs.get(fn)
        return rel.running_image(client, fn, spec.alias if spec else None)

    with ThreadPoolExecutor(max_workers=min(16, len(functions))) as pool:
        return dict(zip(functions, pool.map(one, functions), strict=True))


def status_fields(project: FunctionProject, versions: Any, rows: list[dict]) -> None:
    """Add to `status`'s function rows: who deploys it, its alias, and a rollback hold."""
    specs = function_specs(versions.manifest)
    holds = journal_of(project).holds()
    for row in rows:
        spec = specs.get(row["function"])
        if spec is None:
            continue
        row["deploy"] = spec.deploy
        row["alias"] = spec.alias
        hold = holds.get(spec.name)
        version = versions[spec.image].version
        if hold is not None and hold.holds_at(version):
            row["held"] = {"image_uri": hold.to_image, "from": hold.from_image, "since": hold.at}
        else:
            row["held"] = None
