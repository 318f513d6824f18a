"""One subsettable multi-asset that builds the selected images and deploys their functions.

Versions are pinned per run: the step builds exactly the versions its code location computed
when it loaded (those are the code versions Dagster records for the run), and a file that
changes afterwards fails the build instead of silently shipping other content. A run tagged
with `build-assets/commit` (the git sensor's runs) builds that commit's content from git
objects instead, whatever the working tree holds.
"""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from build_assets.core.plan import PlanEntry, compare
from build_assets.core.versioning import ImageVersion, VersionSet, commit_versions
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.engine.builders.base import Builder, BuildResult
from build_assets.engine.records import BuildRecords
from build_assets.engine.scheduler import BLOCKED, BuildScheduler, Outcome

COMMIT_TAG = "build-assets/commit"
POOL = "image_builds"
MAX_REASONS_SHOWN = 20


def _link(url: str | None) -> MetadataValue | None:
    if not url:
        return None
    if url.startswith("file://"):
        return MetadataValue.path(url.removeprefix("file://"))
    return MetadataValue.url(url)


def _reasons_md(entry: PlanEntry | None) -> str:
    if entry is None or not entry.reasons:
        return "unchanged since the last build"
    shown = entry.reasons[:MAX_REASONS_SHOWN]
    more = len(entry.reasons) - len(shown)
    return "\n".join(f"- {r}" for r in shown) + (f"\n- … {more} more" if more > 0 else "")


def image_metadata(
    outcome: Outcome, entry: PlanEntry | None, commit: str | None
) -> dict[str, object]:
    """Metadata of a finished image materialization."""
    r = outcome.result
    assert r is not None
    meta: dict[str, object] = {
        "tag": r.tag,
        "image_uri": r.image_uri,
        "pinned_uri": r.pinned_uri,
        "digest": r.digest,
        "version": outcome.image.version,
        "builder": r.builder,
        "cached": r.cached,
        "duration_s": round(r.duration_s, 2),
        "context_files": outcome.image.file_count,
        "reasons": MetadataValue.md(_reasons_md(entry)),
    }
    if "context_bytes" in r.extra:
        meta["context_bytes"] = r.extra["context_bytes"]
    if r.build_id:
        meta["build_id"] = r.build_id
    link = _link(r.log_url)
    if link is not None:
        meta["log"] = link
    if commit:
        meta["git_commit"] = commit
    for key, value in r.extra.items():
        if key not in meta and isinstance(value, str | int | float | bool):
            meta[key] = value
    return meta


def _failure_text(outcome: Outcome) -> str:
    if outcome.status == BLOCKED:
        return f"{outcome.name}: not built: {outcome.reason}"
    err = outcome.error
    assert err is not None
    lines = [
        f"{outcome.name}: build {err.status}" + (f" in phase {err.phase}" if err.phase else "")
    ]
    lines.append(str(err))
    if err.log_url:
        lines.append(f"log: {err.log_url}")
    if err.log_tail:
        lines.append("--- last log lines ---\n" + err.log_tail)
    return "\n".join(lines)


class _Deployer:
    """Points Lambda functions at freshly built images (created on the local stack)."""

    def __init__(self, resource: ImageBuildResource) -> None:
        from build_assets.aws.clients import make_client

        self._client = make_client("lambda")
        self._create = resource.create_missing_functions()
        self._role = resource.lambda_role
        if self._create and not self._role:
            from build_assets.engine.deploy import ensure_local_execution_role

            self._role = ensure_local_execution_role(make_client("iam"))

    def deploy(self, function: str, image_uri: str):
        from build_assets.engine.deploy import deploy_function

        return deploy_function(
            self._client, function, image_uri, create_if_missing=self._create, role_arn=self._role
        )


def _function_result(key, function: str, image: ImageVersion, result: BuildResult, deployed):
    return MaterializeResult(
        asset_key=key,
        data_version=DataVersion(result.digest),
        metadata={
            "function_name": function,
            "image_uri": result.pinned_uri,
            "previous_image_uri": deployed.previous_image or "",
            "changed": deployed.changed,
            "resolved_image_uri": deployed.resolved_image_uri or "",
            "image_tag": image.tag,
            "version": image.version,
        },
    )


def run_image_builds(
    context: AssetExecutionContext,
    resource: ImageBuildResource,
    loaded: VersionSet,
    translator: ImageAssetTranslator,
) -> Iterator[MaterializeResult]:
    """Build the selected images, deploy the selected functions, yield results in order."""
    settings = resource.settings()
    versions = loaded
    commit = context.run.tags.get(COMMIT_TAG) if context.run else None
    if commit and commit != loaded.commit:
        versions = commit_versions(settings.repo, commit, settings.manifest)
        context.log.info(f"building the content of commit {commit}")
    selected = context.selected_asset_keys
    images = [img.name for img in versions if translator.get_image_key(img) in selected]
    functions = [
        (fn, img)
        for img in versions
        for fn in img.lambdas
        if translator.get_lambda_key(fn, img) in selected
    ]
    registry = resource.registry_prefix()
    builder: Builder = resource.make_builder()
    records = BuildRecords()
    plan = {e.name: e for e in compare(versions, records.built_states(registry), "first build")}
    scheduler = BuildScheduler(
        builder,
        registry,
        max_concurrent=resource.concurrency(),
        records=records,
        run_id=context.run.run_id,
        on_event=context.log.info,
    )
    failures: list[str] = []
    done: dict[str, BuildResult] = {}
    known = {translator.get_image_key(img) for img in versions}
    known |= {translator.get_lambda_key(fn, img) for fn, img in functions}
    missing = sorted(key.to_user_string() for key in selected - known)
    if missing:  # selected, but absent from the pinned commit's manifest
        failures.append(
            f"not in the manifest at {versions.commit or 'the working tree'}: " + ", ".join(missing)
        )
    deployers: list[_Deployer] = []  # made at the first deploy: builds never wait on AWS set-up

    def deploy(fn: str, img: ImageVersion, result: BuildResult) -> Iterator[MaterializeResult]:
        try:
            if not deployers:
                deployers.append(_Deployer(resource))
            deployed = deployers[0].deploy(fn, result.pinned_uri)
        except Exception as exc:  # noqa: BLE001 - one function failing must not hide others
            failures.append(f"lambda {fn}: deploy of {result.pinned_uri} failed: {exc}")
            context.log.error(failures[-1])
            return
        context.log.info(
            f"lambda {fn}: {'updated to' if deployed.changed else 'already on'} {result.pinned_uri}"
        )
        yield _function_result(translator.get_lambda_key(fn, img), fn, img, result, deployed)

    for outcome in scheduler.run(versions, images):
        if not outcome.ok:
            failures.append(_failure_text(outcome))
            context.log.error(failures[-1])
            continue
        assert outcome.result is not None
        done[outcome.name] = outcome.result
        yield MaterializeResult(
            asset_key=translator.get_image_key(outcome.image),
            data_version=DataVersion(outcome.result.digest),
            metadata=image_metadata(outcome, plan.get(outcome.name), versions.commit),
        )
        for fn, img in functions:
            if img.name == outcome.name:
                yield from deploy(fn, img, outcome.result)

    for fn, img in functions:
        if img.name in images:
            continue  # handled (or failed) with its image above
        req = scheduler.request_for(img, None)
        digest = builder.existing_digest(req)
        if digest is None:
            failures.append(
                f"lambda {fn}: image {img.name} ({req.image_uri}) is not built; select it too"
            )
            continue
        result = BuildResult.already_pushed(req, digest, builder.name)
        yield from deploy(fn, img, result)

    if failures:
        raise Failure(
            description=f"{len(failures)} image build/deploy problem(s):\n\n"
            + "\n\n".join(failures),
            metadata={
                "problems": MetadataValue.md("\n\n".join(f"```\n{f}\n```" for f in failures))
            },
        )


def build_images_asset(
    versions: VersionSet,
    translator: ImageAssetTranslator | None = None,
    *,
    name: str = "build_images",
    pool: str | None = POOL,
) -> AssetsDefinition:
    """The multi-asset of every image and Lambda function of `versions`."""
    translator = translator or ImageAssetTranslator()

    @multi_asset(
        name=name,
        specs=translator.specs(versions),
        can_subset=True,
        pool=pool,
        description="Builds the selected images (bases first, concurrently) and deploys functions.",
    )
    def _build_images(
        context: AssetExecutionContext, image_builds: ImageBuildResource
    ) -> Iterator[MaterializeResult]:
        yield from run_image_builds(context, image_builds, versions, translator)

    return _build_images
