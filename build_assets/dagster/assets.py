"""One subsettable multi-asset that builds the selected images and deploys their functions.

Versions are pinned per run: the step builds exactly the versions its code location computed
when it loaded (those are the code versions Dagster records for the run), and a file that
changes afterwards fails the build instead of silently shipping other content. A run tagged
with `build-assets/commit` (the git sensor's runs) builds that commit's content from git
objects instead, whatever the working tree holds.

The run log tells the story as it happens: first the plan — one short line (`Plan at abc123:
2 to build, 3 cached, 0 blocked`) and, right after it, an `AssetObservation` of the run's first
target whose `plan` metadata is the markdown table (what is built and why, what is cached,
what is blocked), which the run view renders ("Show Markdown") where a log message would show
raw `| … |` text; an observation never changes a materializable asset's data version or
staleness — then one line per state change of each target
(`[NAME] image building: BUILD · est. 40s · log …`, see `engine.progress`), so the run view's
log filter by image works and `build-assets status --watch` can follow any run of the instance.
The same events are published in-process for a terminal around `dagster.materialize`.
"""

from collections.abc import Iterator

from dagster import (
    AssetExecutionContext,
    AssetObservation,
    AssetsDefinition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from build_assets.core.versioning import VersionSet
from build_assets.dagster.internals import hold_storage_connections
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.engine import progress
from build_assets.engine.build_run import BuildRun, Done
from build_assets.engine.scheduler import Outcome
from build_assets.errors import UserError
from build_assets.project import Project

COMMIT_TAG = "build-assets/commit"
POOL = "image_builds"
MAX_REASONS_SHOWN = 20


def _link(url: str | None) -> MetadataValue | None:
    if not url:
        return None
    if url.startswith("file://"):
        return MetadataValue.path(url.removeprefix("file://"))
    return MetadataValue.url(url)


def _reasons_md(reasons: list[str]) -> str:
    if not reasons:
        return "unchanged since the last build"
    shown = reasons[:MAX_REASONS_SHOWN]
    more = len(reasons) - len(shown)
    return "\n".join(f"- {r}" for r in shown) + (f"\n- … {more} more" if more > 0 else "")


def image_metadata(
    outcome: Outcome,
    reasons: list[str],
    commit: str | None,
    durations: dict[str, float] | None = None,
) -> dict[str, object]:
    """Metadata of a finished image materialization; `durations` (queue_wait_s, build_s,
    push_s) are floats so the asset page plots them over time."""
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
        "reasons": MetadataValue.md(_reasons_md(reasons)),
    }
    for key, seconds in (durations or {}).items():
        meta[key] = MetadataValue.float(float(seconds))
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


def with_published(meta: dict[str, object], done: Done) -> dict[str, object]:
    """An image's metadata with the SSM parameter it was published to (or why it was not)."""
    if done.published is not None:
        meta["ssm_parameter"] = done.published.name
    if done.publish_error:
        meta["ssm_publish_error"] = done.publish_error
    return meta


def _function_result(key, done: Done) -> MaterializeResult:
    result, deployed, image = done.result, done.deployed, done.image
    assert result is not None and deployed is not None
    return MaterializeResult(
        asset_key=key,
        data_version=DataVersion(result.digest),
        metadata={
            "function_name": done.target.name,
            # a function a rollback holds runs (and keeps) the rollback's image
            "image_uri": (done.release.image or "") if _held(done) else result.pinned_uri,
            "previous_image_uri": deployed.previous_image or "",
            "changed": deployed.changed,
            "resolved_image_uri": deployed.resolved_image_uri or "",
            "image_tag": image.tag,
            "version": image.version,
            **release_metadata(done.release),
        },
    )


def _held(done: Done) -> bool:
    return done.release is not None and done.release.held


def release_metadata(release) -> dict[str, object]:
    """A function's deploy mode, alias version, drift check and rollback hold (when set)."""
    if release is None:
        return {}
    meta: dict[str, object] = {"deploy": release.mode, "runs_published_image": release.in_sync}
    if release.alias:
        meta.update(alias=release.alias, function_version=release.version or "")
    if release.mode == "none":
        meta["running_image_uri"] = release.image or ""
    if release.held:
        meta["held_by_rollback"] = True
    return meta


def pinned_versions(context: AssetExecutionContext, project: Project, loaded: VersionSet):
    """The versions this run builds: those its code location loaded, or the content of the
    commit in the run's `build-assets/commit` tag (the git sensor's runs)."""
    commit = context.run.tags.get(COMMIT_TAG) if context.run else None
    if commit and commit != loaded.commit:
        context.log.info(f"building the content of commit {commit}")
        return project.versions(commit)
    return loaded


def plan_line(rows: list[dict[str, str]], commit: str | None) -> str:
    """The run's plan in one line (the first log entry of a run's step)."""
    counts = {a: sum(r["action"] == a for r in rows) for a in ("build", "cached", "blocked")}
    return (
        f"Plan at {commit[:12] if commit else 'the working tree'}: {counts['build']} to build,"
        f" {counts['cached']} cached, {counts['blocked']} blocked"
    )


def plan_markdown(rows: list[dict[str, str]], commit: str | None) -> str:
    """The run's plan as markdown: its line, then a table of every selected target."""
    lines = [plan_line(rows, commit), "", "| target | kind | tag | action | why |"]
    lines.append("|---|---|---|---|---|")
    for r in rows:
        why = r["why"].replace("|", "\\|")
        lines.append(f"| {r['target']} | {r['kind']} | {r['tag']} | {r['action']} | {why} |")
    return "\n".join(lines)


def plan_observation(key, rows: list[dict[str, str]], commit: str | None) -> AssetObservation:
    """The plan table as `plan` (markdown) metadata of an observation of `key`, the run's first
    target, with the counts as numbers."""
    metadata: dict[str, object] = {"plan": MetadataValue.md(plan_markdown(rows, commit))}
    for action in ("build", "cached", "blocked", "deploy"):
        metadata[f"plan_{action}"] = sum(r["action"] == action for r in rows)
    if commit:
        metadata["git_commit"] = commit
    return AssetObservation(asset_key=key, description=plan_line(rows, commit), metadata=metadata)


def warn_about_secrets(context: AssetExecutionContext, versions: VersionSet, selected) -> None:
    """A warning per selected image whose context holds files that look like credentials."""
    from build_assets.core.secrets import image_secrets, warning

    for target in selected:
        if target.is_image:
            found = image_secrets(versions[target.name])
            if found:
                context.log.warning(warning(target.name, found))


def run_image_builds(
    context: AssetExecutionContext,
    project: Project,
    loaded: VersionSet,
    translator: ImageAssetTranslator,
) -> Iterator[MaterializeResult]:
    """Build the selected images, deploy the selected functions, yield results in order."""
    hold_storage_connections(context.instance)  # the run worker stores hundreds of events
    versions = pinned_versions(context, project, loaded)
    by_key = translator.keys(versions)
    keys = {t: k for k, t in by_key.items()}
    selected = [t for k, t in by_key.items() if k in context.selected_asset_keys]
    failures: list[str] = []
    missing = sorted(k.to_user_string() for k in context.selected_asset_keys - by_key.keys())
    if missing:  # selected, but absent from the pinned commit's manifest
        failures.append(
            f"not in the manifest at {versions.commit or 'the working tree'}: " + ", ".join(missing)
        )
    try:  # environment faults: one line each for the whole step, not one per image
        project.preflight(
            "for_materialize",
            functions=any(not t.is_image for t in selected),
            images=[t.image for t in selected if t.is_image],
        )
    except UserError as exc:
        raise Failure(description=str(exc)) from None
    run_id = context.run.run_id
    warn_about_secrets(context, versions, selected)

    def on_progress(ev: progress.Progress) -> None:
        context.log.info(ev.line())
        progress.publish(ev)

    run = BuildRun(
        project,
        versions,
        selected,
        run_id=run_id,
        on_event=context.log.debug,  # the progress lines say the same, structured
        on_progress=on_progress,
    )
    rows = run.preview()
    context.log.info(plan_line(rows, versions.commit))
    if selected:  # the table where the run view renders markdown
        context.log_event(plan_observation(keys[selected[0]], rows, versions.commit))
    for done in run.execute():
        if not done.ok:
            failures.append(done.problem or "")
            context.log.error(failures[-1])
        elif done.target.is_image:
            assert done.outcome is not None
            if done.publish_error:
                context.log.warning(
                    f"{done.target.name}: built, but not published to SSM: {done.publish_error}"
                )
            yield MaterializeResult(
                asset_key=keys[done.target],
                data_version=DataVersion(done.outcome.result.digest),  # type: ignore[union-attr]
                metadata=with_published(
                    image_metadata(done.outcome, done.reasons, versions.commit, done.durations),
                    done,
                ),
            )
        else:
            yield _function_result(keys[done.target], done)
    if failures:
        causes = "\n".join(_cause(f) for f in failures)  # one line per image, first
        details = "\n\n".join(failures)
        raise Failure(
            description=causes if details == causes else f"{causes}\n\ndetails:\n\n{details}",
            metadata={
                "problems": MetadataValue.md("\n\n".join(f"```\n{f}\n```" for f in failures))
            },
        )


def _cause(problem: str) -> str:
    """The one-line cause of a problem (its first line)."""
    return next((line for line in problem.splitlines() if line.strip()), problem)


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
        yield from run_image_builds(context, image_builds.project(), versions, translator)

    return _build_images
