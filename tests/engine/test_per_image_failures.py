"""One image's problem fails that image (and holds back its dependents), never the run.

The builder is the simulated one (a test double of the Builder protocol) with injected
errors where a real one raises: a registry that answers 500 on a lookup, an engine that
refuses to start a build, a poll that loses the backend."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize

from build_assets.dagster.assets import build_images_asset
from build_assets.dagster.resources import ImageBuildResource
from build_assets.engine.builders.simulated import SimulatedBuilder
from build_assets.engine.scheduler import BLOCKED, BUILT, FAILED_STATUS, BuildScheduler
from tests.engine.test_scheduler import _repo


class FaultyBuilder(SimulatedBuilder):
    """Raises like a real backend would, for chosen images."""

    def __init__(self, lookup: set[str] = frozenset(), start: set[str] = frozenset()) -> None:
        super().__init__()
        self.lookup_fails, self.start_fails = set(lookup), set(start)

    def existing_digest(self, request):
        if request.image in self.lookup_fails:
            raise RuntimeError(f"registry answered 500 for {request.image_uri}\n<html>...")
        return super().existing_digest(request)

    def start(self, request):
        if request.image in self.start_fails:
            raise OSError("Cannot connect to the Docker daemon")
        return super().start(request)


def test_lookup_and_start_errors_fail_their_image_only(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = FaultyBuilder(lookup={"mid-a"}, start={"other-root"})
    outcomes = {
        o.name: o for o in BuildScheduler(builder, "reg.test").run(versions, versions.images)
    }
    assert outcomes["mid-a"].status == FAILED_STATUS
    assert "registry answered 500" in str(outcomes["mid-a"].error)
    assert "<html>" not in str(outcomes["mid-a"].error)  # one line
    assert outcomes["other-root"].status == FAILED_STATUS
    assert outcomes["other-root"].error.phase == "START"
    assert {n for n, o in outcomes.items() if o.status == BLOCKED} == {
        "leaf-a1",
        "leaf-a2",
        "other-leaf",
    }
    assert {n for n, o in outcomes.items() if o.status == BUILT} == {"root", "mid-b", "leaf-b1"}


def test_a_lost_backend_fails_the_builds_in_flight_not_the_run(tmp_path: Path) -> None:
    versions = _repo(tmp_path)

    class LosesBackend(SimulatedBuilder):
        def poll(self, handles):
            if any(h.request.image == "other-root" for h in handles):
                raise ConnectionError("CodeBuild endpoint unreachable")
            return super().poll(handles)

    builder = LosesBackend()
    scheduler = BuildScheduler(builder, "reg.test", max_concurrent=1)
    outcomes = {o.name: o for o in scheduler.run(versions, ["root", "other-root", "mid-a"])}
    assert outcomes["other-root"].status == FAILED_STATUS
    assert outcomes["other-root"].error.phase == "POLL"
    assert outcomes["root"].status == BUILT and outcomes["mid-a"].status == BUILT


def _materialize(versions, resource: ImageBuildResource):
    """Every image of `versions` in one Dagster run on an ephemeral instance (not raising)."""
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            [build_images_asset(versions, pool=None)],
            resources={"image_builds": resource},
            instance=instance,
            raise_on_error=False,
        )


def test_the_step_failure_starts_with_one_line_per_image(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = FaultyBuilder(lookup={"mid-a"}, start={"other-root"})

    class Faulty(ImageBuildResource):
        def make_builder(self):
            return builder

    resource = Faulty(repo=str(tmp_path), registry="reg.invalid", home=str(tmp_path / "home"))
    result = _materialize(versions, resource)
    assert not result.success
    built = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert built == {"root", "mid-b", "leaf-b1"}  # the others went on
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    head = description.split("\n\ndetails:")[0].splitlines()
    assert any(
        line.startswith("mid-a: build ERROR in phase PREPARE: registry answered 500")
        for line in head
    )
    assert any(
        line.startswith("other-root: build ERROR in phase START: Cannot connect") for line in head
    )
    assert "leaf-a1: not built: base mid-a failed" in head
    assert len(head) == 5  # mid-a, other-root and their three blocked dependents


def test_an_environment_fault_fails_the_step_once_not_each_image(tmp_path: Path) -> None:
    """The real builder's preflight in the Dagster step: a registry nobody answers is one
    line for the step (as from the CLI), before any image is looked up."""
    versions = _repo(tmp_path)
    resource = ImageBuildResource(
        repo=str(tmp_path), registry="127.0.0.1:1/nowhere", home=str(tmp_path / "home")
    )
    result = _materialize(versions, resource)
    assert not result.success
    assert result.get_asset_materialization_events() == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    lines = failure.step_failure_data.user_failure_data.description.splitlines()
    assert len(lines) <= 2, lines  # the registry, and the engine when none runs here
    assert any(ln.startswith("registry: nothing answers at 127.0.0.1:1") for ln in lines), lines
