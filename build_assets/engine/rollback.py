"""Roll a function back to an earlier image, and hold it there.

The earlier image is, in this order: `--to` (a tag or digest of the function's image), the
newest published version older than the alias's one that runs another image, the image the
function journal says it ran before its last deploy, or the newest other successful build of
its image. The function (its alias when it has one) is pointed there, and a hold is recorded
at its image's current version (`engine.holds`): deploys leave it alone until that changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from build_assets.core.functions import FunctionSpec, function_specs
from build_assets.engine import release as rel
from build_assets.engine.deploy import deploy_function
from build_assets.engine.function_deploy import journal_of
from build_assets.engine.holds import Hold
from build_assets.engine.project_protocols import RollbackProject
from build_assets.errors import UserError


@dataclass(frozen=True)
class Rollback:
    """A function moved back: from `old` to `new` (its alias to `version`, when it has one)."""

    function: str
    image: str  # the manifest image it is built from
    old: str | None
    new: str
    alias: str | None = None
    version: str | None = None
    held_at: str | None = None  # the image version the hold is at

    def line(self) -> str:
        where = f"{self.function}:{self.alias}" if self.alias else self.function
        return f"{where}: {self.old or '(nothing)'} -> {self.new}"


def function_of(project: RollbackProject, name: str) -> tuple[FunctionSpec, str]:
    """(its FunctionSpec, its image's current version); one line when it is not one."""
    versions = project.versions()
    spec = function_specs(versions.manifest).get(name)
    if spec is None:
        raise UserError(
            f"rollback: '{name}' is not a Lambda function of {project.settings.manifest}"
        )
    return spec, versions[spec.image].version


def _resolve(project: RollbackProject, spec: FunctionSpec, to: str) -> str:
    """The digest-pinned URI of `to` (a tag, a digest or a pinned URI) in the image's
    repository; one line when the registry does not have it."""
    from build_assets.engine import registry as reg

    repository = project.repository(spec.image)
    if "@sha256:" in to:
        name, digest = to.split("@", 1)
        if name != repository:
            raise UserError(f"rollback --to: {to} is not in {spec.image}'s repository {repository}")
        to = digest
    if to.startswith("sha256:"):
        found = reg.get_manifest(repository, to) is not None
        digest = to
    else:
        digest = reg.manifest_digest(repository, to)
        found = digest is not None
    if not found:
        raise UserError(f"rollback --to: {to} is not in {repository}")
    return f"{repository}@{digest}"


def earlier_image(project: RollbackProject, spec: FunctionSpec, current: str | None) -> str:
    """The image `spec` ran before its last deploy; one line when there is none."""
    client = project._lambda_client()
    if spec.alias:
        now = rel.alias_version(client, spec.name, spec.alias)
        versions = rel.published_versions(client, spec.name)
        for version in reversed(versions.values()):
            if now and int(version.number) < int(now) and version.image not in (None, current):
                return version.image  # type: ignore[return-value]
    before = journal_of(project).previous_of(spec.name, current) if current else None
    if before:
        return before
    repository = project.repository(spec.image)
    for record in project.build_records().recent(1000, project.registry):
        if record.image == spec.image and record.status == "SUCCEEDED" and record.digest:
            uri = f"{repository}@{record.digest}"
            if uri != current:
                return uri
    raise UserError(
        f"rollback: {spec.name} has no earlier image (no older published version, deploy"
        " or build of it): name one with --to TAG|DIGEST"
    )


def rollback(project: RollbackProject, name: str, to: str | None = None) -> Rollback:
    """Point `name` back at an earlier image and hold it there."""
    spec, version = function_of(project, name)
    if spec.owned_by_infrastructure:
        raise UserError(
            f"rollback: {name} is deployed by infrastructure code (deploy: none): roll it back"
            " there"
        )
    client = project._lambda_client()
    current = rel.running_image(client, name, spec.alias)
    if current is None:
        raise UserError(f"rollback: Lambda function {name} does not exist (nothing to roll back)")
    target = _resolve(project, spec, to) if to else earlier_image(project, spec, current)
    if target == current:
        raise UserError(f"rollback: {name} already runs {target}")
    number = None
    if spec.alias:
        number = _version_running(client, spec, target)
        if number is None:
            number = rel.release_alias(client, spec, target).version
        else:
            rel.point_alias(client, name, spec.alias, number)
    else:
        deploy_function(client, name, target)
    journal = journal_of(project)
    journal.record(name, current, target, number)
    journal.hold(Hold(name, spec.image, version, current, target, time.time()))
    return Rollback(name, spec.image, current, target, spec.alias, number, version)


def _version_running(client, spec: FunctionSpec, image: str) -> str | None:
    """The newest published version of `spec` that runs `image`."""
    versions = rel.published_versions(client, spec.name).values()
    found = [v.number for v in versions if v.image == image]
    return found[-1] if found else None


def release_hold(project: RollbackProject, name: str) -> Hold | None:
    """End the rollback hold on `name` (the next deploy may move it again)."""
    function_of(project, name)
    return journal_of(project).release(name)
