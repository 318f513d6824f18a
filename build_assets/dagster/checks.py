"""Asset checks of images and Lambda functions: what was built is still what is out there.

- `in_registry` (each image): the tag of its version is in the registry with the digest its
  latest materialization recorded (`Project.built_digests`);
- `runs_materialized_image` (each function): the function runs the pinned image URI its
  latest materialization deployed (`Project.running_images`); on drift (a hand deploy, a
  half-failed deploy) the failure names the image it runs now and the one it should run;
- `scan_findings` (each image, CodeBuild/ECR backend): ECR scan-on-push finding counts by
  severity as metadata; fails at `fail_on` (default CRITICAL) and above, warns at `warn_on`
  (default HIGH) and above;
- `dockerfile_context` (each image): every COPY/ADD source of its Dockerfile matches a file of
  its build context in the current tree (`core.contextcheck`, as `plan` runs it).

Dagster runs an asset's checks in every run that materializes it, and on demand from the UI.
`build_check_schedule` runs the registry and drift checks periodically; it is STOPPED by
default (turn it on in the UI, Automation tab).
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
    multi_asset_check,
)

from build_assets.core.targets import Target
from build_assets.core.versioning import VersionSet
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.errors import ManifestError
from build_assets.project import Project

IN_REGISTRY = "in_registry"
DRIFT = "runs_materialized_image"
SCAN = "scan_findings"
CONTEXT = "dockerfile_context"
PERIODIC = (IN_REGISTRY, DRIFT)
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
DEFAULT_CRON = "*/30 * * * *"


def _recorded(context: AssetCheckExecutionContext, key: AssetKey) -> dict[str, Any] | None:
    """Metadata values of the asset's latest materialization (None: never materialized)."""
    event = context.instance.get_latest_materialization_event(key)
    mat = event.asset_materialization if event else None
    if mat is None:
        return None
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _never(key: AssetKey, name: str) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=False,
        severity=AssetCheckSeverity.WARN,
        description="not materialized yet: nothing to check",
    )


def registry_check(
    project: Project, versions: VersionSet, target: Target, key: AssetKey, recorded: dict | None
) -> AssetCheckResult:
    """The current tag is in the registry with the digest the materialization recorded."""
    if recorded is None:
        return _never(key, IN_REGISTRY)
    image = versions[target.image]
    tag, digest = recorded.get("tag"), recorded.get("digest")
    meta = {"tag": image.tag, "recorded_digest": digest or ""}
    if tag != image.tag:
        return AssetCheckResult(
            asset_key=key,
            check_name=IN_REGISTRY,
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"the latest materialization built {tag}; the current version is"
            f" {image.tag}: materialize it",
            metadata=meta,
        )
    now = project.built_digests(versions, [image.name])[image.name]
    meta["registry_digest"] = now or ""
    where = f"{project.repository(image.name)}:{image.tag}"
    if now is None:
        desc = f"{where} is not in the registry (the materialization recorded {digest})"
    elif now != digest:
        desc = f"{where} is {now} in the registry; the materialization recorded {digest}"
    else:
        desc = f"{where} is in the registry at {now}"
    return AssetCheckResult(
        asset_key=key, check_name=IN_REGISTRY, passed=now == digest, description=desc, metadata=meta
    )


def drift_check(
    running: str | None, target: Target, key: AssetKey, recorded: dict | None
) -> AssetCheckResult:
    """The function runs the image URI its latest materialization deployed."""
    if recorded is None:
        return _never(key, DRIFT)
    expected = str(recorded.get("image_uri") or "")
    meta = {"expected_image": expected, "running_image": running or ""}
    if running is None:
        desc = f"function {target.name} does not exist (it should run {expected})"
    elif running != expected:
        desc = f"function {target.name} runs {running}, but its asset last deployed {expected}"
    else:
        desc = f"function {target.name} runs {expected}"
    return AssetCheckResult(
        asset_key=key, check_name=DRIFT, passed=running == expected, description=desc, metadata=meta
    )


def scan_check(
    key: AssetKey, recorded: dict | None, *, fail_on: str, warn_on: str, ecr: Any
) -> AssetCheckResult:
    """ECR scan-on-push findings of the materialized digest, by severity."""
    if recorded is None:
        return _never(key, SCAN)
    uri, digest = str(recorded.get("image_uri") or ""), str(recorded.get("digest") or "")
    repository = uri.split("/", 1)[1].rsplit(":", 1)[0] if "/" in uri else uri
    try:
        found = ecr.describe_image_scan_findings(
            repositoryName=repository, imageId={"imageDigest": digest}
        )
    except Exception as exc:  # noqa: BLE001 - no scan (yet), no access: say so, do not crash
        return AssetCheckResult(
            asset_key=key,
            check_name=SCAN,
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"no scan findings for {repository}@{digest}: {exc}",
        )
    status = found.get("imageScanStatus", {}).get("status", "")
    counts = found.get("imageScanFindings", {}).get("findingSeverityCounts", {}) or {}
    meta: dict[str, Any] = {s.lower(): int(counts.get(s, 0)) for s in SEVERITIES}
    meta["scan_status"] = status

    def at_or_above(level: str) -> int:
        return sum(int(counts.get(s, 0)) for s in SEVERITIES[: SEVERITIES.index(level) + 1])

    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no findings"
    if at_or_above(fail_on):
        passed, severity = False, AssetCheckSeverity.ERROR
    elif at_or_above(warn_on):
        passed, severity = False, AssetCheckSeverity.WARN
    else:
        passed, severity = True, AssetCheckSeverity.ERROR
    return AssetCheckResult(
        asset_key=key,
        check_name=SCAN,
        passed=passed,
        severity=severity,
        description=f"{repository}@{digest}: {summary} (fails at {fail_on}, warns at {warn_on})",
        metadata=meta,
    )


def context_check(problems: list[str], name: str, key: AssetKey) -> AssetCheckResult:
    """Every COPY/ADD source of the Dockerfile matches a file of the context (current tree)."""
    mine = [p for p in problems if f"image '{name}'" in p]
    return AssetCheckResult(
        asset_key=key,
        check_name=CONTEXT,
        passed=not mine,
        description="\n".join(mine) or "every COPY/ADD source matches a file of the context",
        metadata={"problems": len(mine)},
    )


def _context_problems(project: Project) -> list[str]:
    try:
        project.versions()
    except ManifestError as exc:
        return list(getattr(exc, "lines", None) or [str(exc)])
    return []


def check_specs(
    versions: VersionSet, translator: ImageAssetTranslator, *, scans: bool
) -> list[AssetCheckSpec]:
    """The specs of every check of `versions`."""
    specs = []
    for key, target in translator.keys(versions).items():
        image_checks = [IN_REGISTRY, CONTEXT, *([SCAN] if scans else [])]
        names = image_checks if target.is_image else [DRIFT]
        specs += [AssetCheckSpec(n, asset=key, description=_DESCRIPTIONS[n]) for n in names]
    return specs


_DESCRIPTIONS = {
    IN_REGISTRY: "The image's tag is in the registry with the digest last materialized.",
    DRIFT: "The function runs the image digest its asset last deployed.",
    SCAN: "ECR scan-on-push findings of the built image (fails on CRITICAL, warns on HIGH).",
    CONTEXT: "Every COPY/ADD source of the Dockerfile is in the build context.",
}


def build_image_checks(
    versions: VersionSet,
    translator: ImageAssetTranslator | None = None,
    *,
    scans: bool = False,
    fail_on: str = "CRITICAL",
    warn_on: str = "HIGH",
    name: str = "image_checks",
):
    """One subsettable multi-check over every image and function of `versions`."""
    translator = translator or ImageAssetTranslator()
    for level, field in ((fail_on, "fail_on"), (warn_on, "warn_on")):
        if level not in SEVERITIES:
            raise ValueError(f"{field}: '{level}' is not one of {', '.join(SEVERITIES)}")
    targets = translator.keys(versions)

    @multi_asset_check(
        name=name, specs=check_specs(versions, translator, scans=scans), can_subset=True
    )
    def _image_checks(
        context: AssetCheckExecutionContext, image_builds: ImageBuildResource
    ) -> Iterator[AssetCheckResult]:
        project = image_builds.project()
        wanted = context.selected_asset_check_keys
        recorded = {k: _recorded(context, k) for k in {c.asset_key for c in wanted}}
        running = project.running_images(
            targets[c.asset_key].name for c in wanted if c.name == DRIFT
        )
        problems = _context_problems(project) if any(c.name == CONTEXT for c in wanted) else []
        ecr = None
        for check in sorted(wanted, key=lambda c: (c.asset_key.to_user_string(), c.name)):
            target, key = targets[check.asset_key], check.asset_key
            if check.name == IN_REGISTRY:
                yield registry_check(project, versions, target, key, recorded[key])
            elif check.name == DRIFT:
                yield drift_check(running.get(target.name), target, key, recorded[key])
            elif check.name == CONTEXT:
                yield context_check(problems, target.name, key)
            elif check.name == SCAN:
                if ecr is None:
                    from build_assets.aws.clients import make_client

                    ecr = make_client("ecr")
                yield scan_check(key, recorded[key], fail_on=fail_on, warn_on=warn_on, ecr=ecr)

    return _image_checks


def build_check_schedule(
    versions: VersionSet,
    translator: ImageAssetTranslator | None = None,
    *,
    cron: str = DEFAULT_CRON,
    status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> ScheduleDefinition:
    """A schedule that runs the registry and drift checks of every asset (STOPPED by default)."""
    translator = translator or ImageAssetTranslator()
    keys = [
        AssetCheckKey(key, name)
        for key, target in translator.keys(versions).items()
        for name in PERIODIC
        if (name == IN_REGISTRY) == target.is_image
    ]
    job = define_asset_job(
        "image_checks_job",
        selection=AssetSelection.checks(*keys),
        description="Registry and drift checks of every image and Lambda function.",
    )
    return ScheduleDefinition(
        name="image_checks_schedule",
        job=job,
        cron_schedule=cron,
        default_status=status,
        description="Runs the registry and drift checks periodically (off by default).",
    )
