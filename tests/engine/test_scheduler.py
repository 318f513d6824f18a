"""The build scheduler with the simulated builder (a test double of the Builder protocol:
nothing here needs Docker or AWS, and the scheduler is what is under test)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from build_assets.core.versioning import VersionSet, worktree_versions
from build_assets.engine.builders.base import BuildHandle
from build_assets.engine.builders.simulated import SimulatedBuilder
from build_assets.engine.scheduler import BLOCKED, BUILT, CACHED, FAILED_STATUS, BuildScheduler

# root -> (mid-a -> leaf-a1, leaf-a2), (mid-b -> leaf-b1); other-root -> other-leaf
CASCADE = {
    "root": None,
    "mid-a": "root",
    "mid-b": "root",
    "leaf-a1": "mid-a",
    "leaf-a2": "mid-a",
    "leaf-b1": "mid-b",
    "other-root": None,
    "other-leaf": "other-root",
}


def _repo(tmp_path: Path) -> VersionSet:
    lines = ["images:"]
    for name, base in CASCADE.items():
        (tmp_path / name).mkdir()
        head = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}" if base else "FROM scratch"
        (tmp_path / name / "Dockerfile").write_text(f"{head}\n# {name}\n")
        lines.append(f"  {name}:\n    dockerfile: {name}/Dockerfile")
        if base:
            lines.append(f"    base: {base}")
    (tmp_path / "images.yaml").write_text("\n".join(lines) + "\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return worktree_versions(tmp_path)


class RecordingBuilder(SimulatedBuilder):
    """Remembers the peak number of builds in flight and each start's base image."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.peak = 0
        self.done_at: dict[str, int] = {}
        self.started_at: dict[str, int] = {}
        self._tick = 0

    def start(self, request):
        self._tick += 1
        self.started_at[request.image] = self._tick
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return super().start(request)

    def finish(self, handle: BuildHandle):
        self._tick += 1
        self.in_flight -= 1
        self.done_at[handle.request.image] = self._tick
        return super().finish(handle)


def test_bases_first_topological_results_and_base_pinned_by_digest(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = RecordingBuilder({"other-root": 0.05, "mid-b": 0.02})
    outcomes = list(BuildScheduler(builder, "reg.local", max_concurrent=8).run(versions, CASCADE))
    names = [o.name for o in outcomes]
    assert sorted(names) == sorted(CASCADE)
    for o in outcomes:
        assert o.status == BUILT
        base = CASCADE[o.name]
        if base:
            assert names.index(base) < names.index(o.name)  # yielded after its base
            assert builder.started_at[o.name] > builder.done_at[base]  # started after base done
    by_name = {r.image: r for r in builder.started}
    base_result = next(o for o in outcomes if o.name == "root").result
    assert by_name["mid-a"].base_image == f"reg.local/root@{base_result.digest}"
    assert by_name["root"].base_image is None


def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = RecordingBuilder(default_duration=0.01)
    list(BuildScheduler(builder, "reg", max_concurrent=2).run(versions, CASCADE))
    assert builder.peak == 2
    builder2 = RecordingBuilder(default_duration=0.01)
    list(BuildScheduler(builder2, "reg", max_concurrent=1).run(versions, CASCADE))
    assert builder2.peak == 1


def test_failure_blocks_dependents_not_siblings(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = SimulatedBuilder(fail={"mid-a"})
    outcomes = {o.name: o for o in BuildScheduler(builder, "reg").run(versions, CASCADE)}
    assert outcomes["mid-a"].status == FAILED_STATUS
    assert outcomes["mid-a"].error is not None and "simulated failure" in str(
        outcomes["mid-a"].error
    )
    assert outcomes["leaf-a1"].status == BLOCKED == outcomes["leaf-a2"].status
    assert outcomes["leaf-a1"].reason == "base mid-a failed"
    for sibling in ("mid-b", "leaf-b1", "other-root", "other-leaf"):
        assert outcomes[sibling].status == BUILT
    started = {r.image for r in builder.started}
    assert "leaf-a1" not in started and "leaf-a2" not in started


def test_existing_tags_are_cached_and_not_rebuilt(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = SimulatedBuilder()
    list(BuildScheduler(builder, "reg").run(versions, CASCADE))
    first_starts = len(builder.started)
    outcomes = list(BuildScheduler(builder, "reg").run(versions, CASCADE))
    assert {o.status for o in outcomes} == {CACHED}
    assert len(builder.started) == first_starts


def test_unselected_base_is_looked_up_in_the_registry(tmp_path: Path) -> None:
    versions = _repo(tmp_path)
    builder = SimulatedBuilder()
    [missing] = list(BuildScheduler(builder, "reg").run(versions, ["leaf-b1"]))
    assert missing.status == BLOCKED and "mid-b" in (missing.reason or "")
    list(BuildScheduler(builder, "reg").run(versions, ["root", "mid-b"]))
    [built] = list(BuildScheduler(builder, "reg").run(versions, ["leaf-b1"]))
    assert built.status == BUILT
    assert builder.started[-1].base_image.startswith("reg/mid-b@sha256:")


def test_failed_build_whose_tag_appeared_counts_as_cached(tmp_path: Path) -> None:
    """Two runs building the same content: the loser's push fails on an immutable tag."""
    versions = _repo(tmp_path)

    class LosingRace(SimulatedBuilder):
        def finish(self, handle):
            self.pushed[handle.request.image_uri] = "sha256:" + "1" * 64  # the winner's push
            return super().finish(handle)

    builder = LosingRace(fail={"root"})
    [outcome] = list(BuildScheduler(builder, "reg").run(versions, ["root"]))
    assert outcome.status == CACHED and outcome.result.digest == "sha256:" + "1" * 64


def test_closing_the_run_cancels_builds_in_flight(tmp_path: Path) -> None:
    """A cancelled Dagster run closes the generator: every build still in flight is stopped."""
    versions = _repo(tmp_path)
    builder = SimulatedBuilder({"other-root": 30.0, "root": 0.0})
    run = BuildScheduler(builder, "reg").run(versions, ["root", "other-root"])
    first = next(run)
    assert first.name == "root"
    run.close()
    assert builder.cancelled == ["sim-2"]


def test_invalid_concurrency_is_rejected() -> None:
    with pytest.raises(ValueError):
        BuildScheduler(SimulatedBuilder(), "reg", max_concurrent=0)


def test_independent_builds_are_in_flight_together(tmp_path: Path) -> None:
    """Independent builds overlap: after root, its two children and other-root's run at once."""
    versions = _repo(tmp_path)
    builder = RecordingBuilder({"root": 0.01, "other-root": 0.2}, default_duration=0.05)
    list(BuildScheduler(builder, "reg", max_concurrent=8).run(versions, CASCADE))
    assert builder.peak >= 3
    assert builder.started_at["mid-a"] < builder.done_at["other-root"]


def test_digests_the_caller_just_looked_up_are_not_asked_again(tmp_path: Path) -> None:
    versions = _repo(tmp_path)

    class Counting(SimulatedBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[str] = []

        def existing_digest(self, request):
            self.asked.append(request.image)
            return super().existing_digest(request)

    builder = Counting()
    known = {"root": None, "mid-a": None}
    outcomes = list(BuildScheduler(builder, "reg.test").run(versions, ["root", "mid-a"], known))
    assert [o.status for o in outcomes] == [BUILT, BUILT]
    assert builder.asked == []  # both answers came from the caller
    list(BuildScheduler(builder, "reg.test").run(versions, ["root", "mid-a"]))
    assert sorted(builder.asked) == ["mid-a", "root"]  # without them: one look-up each
