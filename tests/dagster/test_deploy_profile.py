"""The production Dagster instance profile (deploy/dagster.yaml) on real parts: a real
PostgreSQL server (tests/postgres_plugin.py), a real moto server over HTTP (S3 compute logs,
ECS task definitions, Lambda), and for the two-worker test the real Docker engine + registry.

Only the run launcher is swapped (for Dagster's default one) where runs actually execute: the
ECS launcher starts ECS tasks, which moto does not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from build_assets.dagster.assets import POOL
from build_assets.dagster.location import load_versions
from build_assets.dagster.materialize import RunSummary, all_keys, run_materialization
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.engine.builders.simulated import SimulatedBuilder
from build_assets.stack.postgres import PostgresInfo
from tests.gitutil import (
    ALL_IMAGES,
    BASES,
    CREATE,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    LAMBDA_CREATE,
    LAMBDA_HARMONIZE,
    git,
    prepend,
    seed_repo,
)
from tests.postgres_plugin import psql

PROFILE_DIR = Path(__file__).resolve().parents[2] / "deploy"
BUCKET = "build-assets-compute-logs"
TASK_FAMILY = "build-assets-run"
BUILDER = SimulatedBuilder()


class SimulatedBuilds(ImageBuildResource):
    """The real resource with the simulated builder (a test double of the Builder protocol)."""

    def make_builder(self):
        return BUILDER


def shipped_profile() -> dict:
    return yaml.safe_load((PROFILE_DIR / "dagster.yaml").read_text())


def instance_at(home: Path, config: dict) -> DagsterInstance:
    """A DagsterInstance whose DAGSTER_HOME is `home`, configured by `config`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def default_launcher(config: dict) -> dict:
    """The shipped profile with its run launcher swapped for Dagster's default one."""
    return {
        **config,
        "run_launcher": {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"},
    }


@pytest.fixture
def profile_env(postgres_db: PostgresInfo, aws, monkeypatch) -> PostgresInfo:
    """The variables the profile reads, pointing at the real Postgres and moto; the compute
    log bucket and the run worker's task definition exist in moto."""
    for key, value in postgres_db.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BUILD_ASSETS_COMPUTE_LOG_BUCKET", BUCKET)
    monkeypatch.setenv("DAGSTER_RUN_TASK_DEFINITION", TASK_FAMILY)
    aws.client("s3").create_bucket(Bucket=BUCKET)
    aws.client("ecs").register_task_definition(
        family=TASK_FAMILY,
        containerDefinitions=[{"name": "run", "image": "build-assets:latest", "memory": 2048}],
    )
    return postgres_db


def test_shipped_profile_loads_with_ecs_launcher_and_s3_logs(profile_env, aws, tmp_path) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    ref = InstanceRef.from_dir(str(tmp_path / "home"), config_dir=str(PROFILE_DIR))
    with DagsterInstance.from_ref(ref) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert instance.run_monitoring_enabled
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        # The launcher resolved the run worker's task definition in (moto's) ECS.
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        assert launcher.task_definition == (
            f"arn:aws:ecs:us-east-1:123456789012:task-definition/{TASK_FAMILY}:1"
        )
        assert launcher.container_name == "run"
    # Dagster created its schema in our Postgres database.
    tables = {r[0] for r in psql(profile_env, "SELECT tablename FROM pg_tables")}
    assert {"runs", "event_logs", "concurrency_slots", "instance_info"} <= tables


def test_profile_rejects_a_task_definition_without_the_run_container(
    profile_env, aws, tmp_path, monkeypatch
) -> None:
    aws.client("ecs").register_task_definition(
        family="other", containerDefinitions=[{"name": "web", "image": "x", "memory": 512}]
    )
    monkeypatch.setenv("DAGSTER_RUN_TASK_DEFINITION", "other")
    ref = InstanceRef.from_dir(str(tmp_path / "home"), config_dir=str(PROFILE_DIR))
    with DagsterInstance.from_ref(ref) as instance, pytest.raises(Exception, match="run"):
        _ = instance.run_launcher


# --------------------------------------------------------------------------------------------
# the seed's scenarios on the production profile (default launcher), simulated builds


def _run_all(instance, resource, translator) -> RunSummary:
    """Materialize every image and function: unchanged versions come out `cached`."""
    versions = load_versions(resource)
    keys = all_keys(versions, translator)
    summary = run_materialization(keys, instance=instance, versions=versions, resource=resource)
    assert summary.success, summary.problems
    return summary


def _sessions(info: PostgresInfo) -> int:
    """Connections ever made to the database (Postgres's own count, pg_stat_database)."""
    sql = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    return int(psql(info, sql)[0][0])


def test_seed_scenarios_on_the_production_profile(profile_env, aws, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "TRUE")  # images live in no ECR here
    monkeypatch.setenv("BUILD_ASSETS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("BUILD_ASSETS_REF", raising=False)
    BUILDER.pushed.clear()
    repo = seed_repo(tmp_path / "repo")
    resource = SimulatedBuilds(repo=str(repo), registry="reg.test/deploy", backend="local")
    translator = ImageAssetTranslator()
    functions = sorted([LAMBDA_HARMONIZE, LAMBDA_CREATE])
    with instance_at(tmp_path / "home", default_launcher(shipped_profile())) as instance:
        sessions_before = _sessions(profile_env)
        initial = _run_all(instance, resource, translator)
        sessions = _sessions(profile_env) - sessions_before
        assert sorted(initial.built) == sorted(ALL_IMAGES)
        assert sorted(initial.functions_updated) == functions

        prepend(repo, HANDLER, "# a handler change")
        t1 = _run_all(instance, resource, translator)
        assert t1.built == [HARMONIZE] and t1.functions_updated == [LAMBDA_HARMONIZE]

        prepend(repo, DYNAMO, "# in every base")
        t3 = _run_all(instance, resource, translator)
        assert sorted(t3.built) == sorted(ALL_IMAGES)
        assert sorted(t3.functions_updated) == functions

        git(repo, "checkout", "--", ".")
        rev = _run_all(instance, resource, translator)
        assert rev.built == [] and sorted(rev.cached) == sorted(ALL_IMAGES)
        assert rev.tags == initial.tags
        assert sorted(rev.functions_updated) == functions  # back to the original images

        # The instance reads its history back from Postgres.
        records = instance.get_run_records()
        assert {r.dagster_run.run_id for r in records} >= {x.run_id for x in (initial, rev)}

    # The run worker holds its storage connection: dagster-postgres alone opens 2-3 per event.
    events = int(
        psql(profile_env, f"SELECT count(*) FROM event_logs WHERE run_id = '{initial.run_id}'")[0][
            0
        ]
    )
    assert sessions < events / 4, f"{sessions} Postgres sessions for {events} events"

    runs = [initial, t1, t3, rev]
    # Independent evidence in Postgres: each run SUCCESS, one materialization event per asset.
    for summary in runs:
        rows = psql(profile_env, f"SELECT status FROM runs WHERE run_id = '{summary.run_id}'")
        assert rows == [["SUCCESS"]]
        count = psql(
            profile_env,
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            f" AND run_id = '{summary.run_id}'",
        )
        expected = len(summary.built + summary.cached)
        expected += len(summary.functions_updated + summary.functions_unchanged)
        assert int(count[0][0]) == expected
    # Step logs went to the S3 bucket of the profile (moto), under its prefix.
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="dagster/compute-logs/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(initial.run_id in k for k in keys), keys


# --------------------------------------------------------------------------------------------
# two run workers, one Postgres instance, one registry, real Docker builds

WORKER = """
import json, sys
from dagster import DagsterInstance
from build_assets.dagster.assets import POOL
from build_assets.dagster.location import load_versions
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.materialize import run_materialization
from build_assets.dagster.translator import ImageAssetTranslator

repo, registry, names = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
resource = ImageBuildResource(repo=repo, registry=registry, backend="local")
translator = ImageAssetTranslator()
versions = load_versions(resource)
keys = [k for k, t in translator.keys(versions).items() if t.name in names]
with DagsterInstance.get() as instance:
    summary = run_materialization(keys, instance=instance, versions=versions, resource=resource)
print("SUMMARY " + json.dumps(summary.to_dict()))
"""

WORKER_A = [*BASES, HARMONIZE, LAMBDA_HARMONIZE]  # overlap: the three bases
WORKER_B = ["base-receipt-dynamo", "base-receipt-label", CREATE, LAMBDA_CREATE]


def _two_workers(tmp_path: Path, repo: Path, registry: str, dagster_home: Path):
    """Start both workers at once; return their summaries and their state folders."""
    procs, homes = [], []
    for name, selection in (("a", WORKER_A), ("b", WORKER_B)):
        home = tmp_path / f"worker-{name}"
        homes.append(home)
        env = {**os.environ, "BUILD_ASSETS_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
        argv = [sys.executable, "-c", WORKER, str(repo), registry, ",".join(selection)]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
    summaries = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        line = next(ln for ln in out.splitlines() if ln.startswith("SUMMARY "))
        summaries.append(json.loads(line.removeprefix("SUMMARY ")))
    return summaries, homes


def _real_builds(homes: list[Path]) -> list[str]:
    """Images actually built (not cached) according to both workers' build records."""
    from build_assets.engine.records import BuildRecords

    built = []
    for home in homes:
        for rec in BuildRecords(home / "builds.sqlite").recent(100):
            if rec.status == "SUCCEEDED" and not rec.cached:
                built.append(rec.image)
    return built


def _check_workers(summaries, stack, registry: str) -> None:
    from build_assets.aws.clients import make_client
    from build_assets.engine.registry import manifest_digest

    a, b = summaries
    assert a["success"], a["problems"]
    assert b["success"], b["problems"]
    for image in ("base-receipt-dynamo", "base-receipt-label"):
        assert a["tags"][image] == b["tags"][image]  # same version, same tag on both workers
    tags = {**a["tags"], **b["tags"]}
    assert set(tags) == set(ALL_IMAGES)
    digests = {}
    for image, tag in tags.items():
        digests[image] = manifest_digest(f"{registry}/{image}", tag)
        assert digests[image] is not None, f"{image}:{tag} not in the registry"
    lam = make_client("lambda")
    for fn, image in ((LAMBDA_HARMONIZE, HARMONIZE), (LAMBDA_CREATE, CREATE)):
        uri = lam.get_function(FunctionName=fn)["Code"]["ImageUri"]
        assert uri.endswith(f"@{digests[image]}"), (fn, uri)


def _workers_world(stack_env, tmp_path: Path, pool_limit: int):
    repo = seed_repo(tmp_path / "repo")
    registry = f"{stack_env.registry}/deploy-{uuid.uuid4().hex[:8]}"
    config = default_launcher(shipped_profile())
    config["concurrency"]["pools"]["default_limit"] = pool_limit
    config.pop("compute_logs")  # the workers' step logs stay local (no bucket on the stack)
    dagster_home = tmp_path / "dagster_home"
    # Create the schema and the pool's limit row once, before the race: two runs that first
    # use a pool at the same moment both insert its default limit (a unique violation).
    with instance_at(dagster_home, config) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, pool_limit)
    return repo, registry, dagster_home


@pytest.mark.stack
def test_two_workers_share_postgres_and_build_each_version_once(
    stack_env, postgres_db, tmp_path, monkeypatch
) -> None:
    """As shipped (pool `image_builds` limit 1): the second worker's step waits for the
    first's slot in Postgres, then finds the shared bases' tags in the registry."""
    for key, value in postgres_db.env().items():
        monkeypatch.setenv(key, value)
    repo, registry, dagster_home = _workers_world(stack_env, tmp_path, 1)
    summaries, homes = _two_workers(tmp_path, repo, registry, dagster_home)
    _check_workers(summaries, stack_env, registry)
    built = _real_builds(homes)
    assert sorted(built) == sorted(ALL_IMAGES), built  # each version built exactly once
    cached = set(summaries[0]["cached"]) | set(summaries[1]["cached"])
    assert cached & {"base-receipt-dynamo", "base-receipt-label"}
    runs = psql(postgres_db, "SELECT status FROM runs")
    assert sorted(r[0] for r in runs) == ["SUCCESS", "SUCCESS"]


@pytest.mark.stack
def test_two_workers_in_parallel_steps(stack_env, postgres_db, tmp_path, monkeypatch) -> None:
    """Pool limit 2: both steps build at once; both runs succeed with the right tags and
    functions, and each version is built once: the build leases live in the same Postgres
    (BUILD_ASSETS_LEASE_URL), so the second worker waits for the first's build of a shared
    base and records it `cached`."""
    for key, value in postgres_db.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BUILD_ASSETS_LEASE_URL", postgres_db.url)
    repo, registry, dagster_home = _workers_world(stack_env, tmp_path, 2)
    summaries, homes = _two_workers(tmp_path, repo, registry, dagster_home)
    _check_workers(summaries, stack_env, registry)
    built = _real_builds(homes)
    assert sorted(built) == sorted(ALL_IMAGES), built  # each version built exactly once
    cached = set(summaries[0]["cached"]) | set(summaries[1]["cached"])
    assert cached & {"base-receipt-dynamo", "base-receipt-label"}
    # the leases were taken in Postgres (none in either worker's own state folder)
    keys = {r[0] for r in psql(postgres_db, "SELECT key FROM build_assets_leases")}
    assert {k.split("@")[0].rsplit("/", 1)[-1] for k in keys} == set(ALL_IMAGES), keys
    assert not any((home / "leases.sqlite").exists() for home in homes)
