"""One build run, Dagster-free: build the selected images (bases first, many in flight),
deploy the selected functions the moment their image is ready, and stream one `Done` per
target in topological order. The Dagster multi-asset and any other front end only translate
these into their own events. Every state change of every target (queued, waiting for its base,
building, deploying, done, ...) is also a `Progress` event for `on_progress`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from build_assets.core.plan import PlanEntry, compare
from build_assets.core.targets import Target
from build_assets.core.versioning import ImageVersion, VersionSet
from build_assets.engine import progress
from build_assets.engine.builders.base import BuildResult
from build_assets.engine.project_protocols import RunProject
from build_assets.engine.scheduler import BLOCKED, Outcome

if TYPE_CHECKING:  # deploy imports boto3: not needed to load definitions
    from build_assets.engine.deploy import DeployResult
    from build_assets.engine.publish import Published
    from build_assets.engine.release import Release


@dataclass
class Done:
    """The end of one target in a run: a result (image or deploy), or a problem line."""

    target: Target
    image: ImageVersion
    result: BuildResult | None = None
    outcome: Outcome | None = None  # images only
    deployed: DeployResult | None = None  # functions only
    problem: str | None = None
    reasons: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)  # images: queue_wait_s, build_s..
    release: Release | None = None  # functions: alias version, drift check, rollback hold
    published: Published | None = None  # images: the SSM parameter written
    publish_error: str | None = None  # images: built, but the SSM parameter was not written

    @property
    def ok(self) -> bool:
        return self.problem is None


def failure_text(outcome: Outcome) -> str:
    """What a person needs to know about a failed or blocked image."""
    if outcome.status == BLOCKED:
        return f"{outcome.name}: not built: {outcome.reason}"
    err = outcome.error
    assert err is not None
    where = f" in phase {err.phase}" if err.phase else ""
    message = str(err).removeprefix(f"{outcome.name}: ").strip().splitlines()
    lines = [f"{outcome.name}: build {err.status}{where}: {message[0] if message else ''}"]
    lines.extend(message[1:])
    if err.log_url:
        lines.append(f"log: {err.log_url}")
    if err.log_tail:
        lines.append("--- last log lines ---\n" + err.log_tail)
    return "\n".join(lines)


class BuildRun:
    """Builds and deploys a selection of targets of one version set."""

    def __init__(
        self,
        project: RunProject,
        versions: VersionSet,
        selected: list[Target],
        *,
        run_id: str | None = None,
        on_event: Callable[[str], None] | None = None,
        on_progress: Callable[[progress.Progress], None] | None = None,
    ) -> None:
        self.project = project
        self.versions = versions
        self.selected = selected
        self.run_id = run_id
        self.on_event = on_event or (lambda message: None)
        self._deployer = None  # made at the first deploy: builds never wait on AWS set-up
        self._publisher = None  # made at the first image: SSM (engine.publish)
        self._publish_down: str | None = None  # SSM unreachable: not tried again this run
        self.progress = progress.ProgressTracker(on_progress, run_id=run_id)
        self._digests: dict[str, str | None] = {}  # looked up by `preview`, reused by the builds

    @functools.cached_property
    def reasons(self) -> dict[str, PlanEntry]:
        """Why each image is built, against the last recorded build of it (computed once)."""
        states = self.project.build_records().built_states(self.project.registry)
        return {e.name: e for e in compare(self.versions, states, "first build")}

    def preview(self) -> list[dict[str, str]]:
        """The run's plan before any build: per selected image 'build' (with why), 'cached'
        (its tag is in the registry) or 'blocked' (an unselected base is not built); per
        function the image it is deployed from. One registry look-up per image, in parallel."""
        images = [t.name for t in self.selected if t.is_image]
        bases = {self.versions[n].base for n in images} - set(images) - {None}
        try:
            digests = self.project.built_digests(self.versions, [*images, *sorted(bases)])  # type: ignore[list-item]
        except Exception:  # noqa: BLE001 - the preview only informs; the builds report per image
            digests = {}
        self._digests = digests
        reasons = self.reasons
        rows = []
        for name in images:
            image = self.versions[name]
            if digests.get(name):
                action, why = "cached", "tag already in the registry"
            elif image.base in bases and not digests.get(image.base):  # type: ignore[arg-type]
                action, why = "blocked", f"base {image.base} is not built and not selected"
            else:
                entry = reasons.get(name)
                action, why = "build", "; ".join(entry.reasons[:3]) if entry else "first build"
            rows.append(
                {
                    "target": name,
                    "kind": progress.IMAGE,
                    "tag": image.tag,
                    "action": action,
                    "why": why,
                }
            )
        from build_assets.core.functions import function_specs

        specs = function_specs(self.versions.manifest)
        for fn in self.selected:
            if not fn.is_image:
                spec = specs.get(fn.name)
                none = spec is not None and spec.owned_by_infrastructure
                rows.append(
                    {
                        "target": fn.name,
                        "kind": progress.LAMBDA,
                        "tag": self.versions[fn.image].tag,
                        "action": "drift check" if none else "deploy",
                        "why": f"image {fn.image}",
                    }
                )
        return rows

    def execute(self) -> Iterator[Done]:
        images = [t.name for t in self.selected if t.is_image]
        functions = [t for t in self.selected if not t.is_image]
        for fn in functions:
            if fn.image in images:
                self.progress.set(fn.name, progress.WAITING, fn.image, kind=progress.LAMBDA)
            else:
                self.progress.set(fn.name, progress.QUEUED, kind=progress.LAMBDA)
        reasons = self.reasons
        scheduler = self.project.scheduler(run_id=self.run_id, on_event=self.on_event)
        scheduler.progress = self.progress  # one board for images and functions
        for outcome in scheduler.run(self.versions, images, self._digests):
            entry = reasons.get(outcome.name)
            target = next(t for t in self.selected if t.is_image and t.name == outcome.name)
            durations = self.progress.durations(outcome.name)
            if not outcome.ok:
                for fn in functions:
                    if fn.image == outcome.name:
                        why = f"image {outcome.name} {outcome.status}"
                        self.progress.set(fn.name, progress.BLOCKED, why, kind=progress.LAMBDA)
                problem = failure_text(outcome)
                yield Done(target, outcome.image, outcome=outcome, problem=problem)
                continue
            assert outcome.result is not None
            published, publish_error = self._publish(outcome.image, outcome.result)
            yield Done(
                target,
                outcome.image,
                result=outcome.result,
                outcome=outcome,
                reasons=entry.reasons if entry else [],
                durations=durations,
                published=published,
                publish_error=publish_error,
            )
            for fn in functions:
                if fn.image == outcome.name:
                    yield self._deploy(fn, outcome.image, outcome.result)
        for fn in functions:
            if fn.image in images:
                continue  # handled (or failed) with its image above
            image = self.versions[fn.image]
            req = self.project.request_for(image)
            digest = self.project.builder().existing_digest(req)
            if digest is None:
                problem = f"lambda {fn.name}: image {image.name} ({req.image_uri}) is not built;"
                self.progress.set(
                    fn.name, progress.BLOCKED, f"image {image.name} not built", kind=progress.LAMBDA
                )
                yield Done(fn, image, problem=problem + " select it too")
                continue
            result = BuildResult.already_pushed(req, digest, self.project.builder().name)
            yield self._deploy(fn, image, result)

    def _publish(self, image: ImageVersion, result: BuildResult):
        """(the SSM parameter written, None) or (None, why not) for one built image: best
        effort, like provenance (the image is built; `status` shows the parameter lags).
        After SSM could not be reached once, the run does not try again."""
        if self._publish_down:
            return None, self._publish_down
        try:
            if self._publisher is None:
                from build_assets.engine.publish import ImagePublisher

                self._publisher = ImagePublisher.for_project(self.project, self.versions.manifest)
            commit = self.versions.commit
            return self._publisher.publish(
                image.name, result.pinned_uri, image.tag, image.version, commit
            ), None
        except Exception as exc:  # noqa: BLE001 - built, but infrastructure code cannot see it
            from botocore.exceptions import EndpointConnectionError

            why = _deploy_error(exc, image.name)
            if isinstance(exc, EndpointConnectionError) or "cannot reach" in why:
                self._publish_down = why
            self.on_event(f"{image.name}: built, but publishing {result.pinned_uri} failed: {why}")
            return None, why

    def _deploy(self, fn: Target, image: ImageVersion, result: BuildResult) -> Done:
        self.progress.set(fn.name, progress.DEPLOYING, kind=progress.LAMBDA)
        try:
            if self._deployer is None:
                from build_assets.engine.function_deploy import FunctionDeployer

                # a builder that knows what it pushes says what Lambda will be given
                known = getattr(self.project.builder(), "media_type", None)
                self._deployer = FunctionDeployer(self.project, self.versions.manifest, known)
            release = self._deployer.deploy(fn, result.pinned_uri)
        except Exception as exc:  # noqa: BLE001 - one function failing must not hide others
            why = _deploy_error(exc, fn.name)
            problem = f"lambda {fn.name}: deploy of {result.pinned_uri} failed: {why}"
            self.progress.set(fn.name, progress.FAILED, f"deploy: {why}", kind=progress.LAMBDA)
            return Done(fn, image, result=result, problem=problem)
        if release.held:
            detail, text = "held by a rollback", f"held by a rollback on {release.image}"
        elif release.mode == "none":
            detail = "runs it" if release.in_sync else "drift: infrastructure deploy lags"
            text = f"deployed by infrastructure code; runs {release.image}"
        else:
            detail = "updated" if release.changed else "already current"
            verb = "updated to" if release.changed else "already on"
            text = f"{verb} {result.pinned_uri}"
            if release.alias:
                text += f" (alias {release.alias} -> version {release.version})"
        self.progress.set(fn.name, progress.DONE, detail, kind=progress.LAMBDA)
        self.on_event(f"lambda {fn.name}: {text}")
        return Done(fn, image, result=result, deployed=release.as_deploy_result(), release=release)


def _deploy_error(exc: Exception, function: str) -> str:
    """One line for a failed deploy: a user error as it is, an AWS error described."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, (BotoCoreError, ClientError)):
        from build_assets.aws.clients import describe_error

        return describe_error(exc, "update the function", f"Lambda {function}")
    return str(exc)
