"""`build-assets plan` as a user runs it (a subprocess on real git repositories): the JSON
contract, the table, build records, and every bad input as one line with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from build_assets.core.versioning import worktree_versions
from build_assets.engine.records import FAILED, SUCCEEDED, BuildRecord, BuildRecords
from tests.gitutil import (
    AGENT,
    ALL_IMAGES,
    CREATE,
    CREATE_HANDLER,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    LABEL,
    LAMBDA_CREATE,
    LAMBDA_HARMONIZE,
    SEED_FILES,
    commit_all,
    git,
    head,
    make_repo,
    prepend,
    seed_repo,
    write,
)

KEYS = {"name", "version", "tag", "base", "lambdas", "changed", "reasons"}
REGISTRY = "reg.test"


def run_cli(
    *args: str,
    cwd: Path,
    home: Path,
    registry: str | None = REGISTRY,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`python -m build_assets ARGS` with its own state folder and no BUILD_ASSETS_* leaking in
    from the caller's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    clean.update({"BUILD_ASSETS_HOME": str(home), "COLUMNS": "200"})
    if registry:
        clean["BUILD_ASSETS_REGISTRY"] = registry
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "build_assets", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )


def entries_of(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    """{image: entry} of a `plan --json` run (asserting success and a single JSON object)."""
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    return {img["name"]: img for img in data["images"]}


def plan_json(*args: str, cwd: Path, home: Path, **kw) -> dict[str, dict]:
    """{image: entry} of `plan --json ARGS`."""
    return entries_of(run_cli("plan", "--json", *args, cwd=cwd, home=home, **kw))


def run_many(calls: dict[str, dict]) -> dict[str, subprocess.CompletedProcess]:
    """`run_cli(*kwargs["args"], **other kwargs)` for every {id: kwargs}, concurrently: the
    interpreter start-up of the CLI dominates, so tests that need several runs start them
    together."""

    def one(kw: dict) -> subprocess.CompletedProcess:
        kw = dict(kw)
        return run_cli(*kw.pop("args"), **kw)

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {key: pool.submit(one, kw) for key, kw in calls.items()}
        return {key: f.result() for key, f in futures.items()}


def rebuilt(entries: dict[str, dict]) -> list[str]:
    return [name for name, e in entries.items() if e["changed"]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seed_repo(tmp_path / "receipts")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "state"


# --- the JSON contract --------------------------------------------------------------------------


def test_json_is_exactly_one_object_with_the_documented_keys(repo: Path, home: Path) -> None:
    prepend(repo, HANDLER, "# edit")
    proc = run_cli("plan", "--json", "--since", "HEAD", cwd=repo, home=home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.endswith("\n") and proc.stdout.count("\n") == 1
    data = json.loads(proc.stdout)  # one document, nothing around it
    assert set(data) == {"images"}
    images = data["images"]
    assert [i["name"] for i in images] == ALL_IMAGES  # bases before their dependents
    for img in images:
        assert set(img) == KEYS
        assert img["tag"] == "git-" + img["version"][:12]
        assert len(img["version"]) == 64
        assert isinstance(img["changed"], bool) and isinstance(img["reasons"], list)
    by_name = {i["name"]: i for i in images}
    assert by_name["base-receipt-dynamo"]["base"] is None
    assert by_name["base-receipt-agent"]["base"] == "base-receipt-label"
    assert by_name[HARMONIZE]["lambdas"] == [LAMBDA_HARMONIZE]
    assert by_name[CREATE]["lambdas"] == [LAMBDA_CREATE]
    assert by_name["base-receipt-label"]["lambdas"] == []
    assert rebuilt(by_name) == [HARMONIZE]
    assert by_name[HARMONIZE]["reasons"] == [f"{HANDLER} modified"]
    assert all(i["reasons"] == [] for i in images if not i["changed"])
    # the CLI reports the library's versions
    assert {i["name"]: i["version"] for i in images} == {
        img.name: img.version for img in worktree_versions(repo)
    }


SEED_SCENARIOS = {  # the seed's tests: file edited -> (images rebuilt, their reasons)
    "test1-handler": (HANDLER, [HARMONIZE], {HARMONIZE: [f"{HANDLER} modified"]}),
    "test2-receipt_agent": (AGENT, [HARMONIZE], {HARMONIZE: [f"{AGENT} modified"]}),
    "test3-receipt_dynamo": (
        DYNAMO,
        ALL_IMAGES,
        {
            "base-receipt-dynamo": [f"{DYNAMO} modified"],
            "base-receipt-label": ["base base-receipt-dynamo changed"],
            "base-receipt-agent": ["base base-receipt-label changed"],
            HARMONIZE: ["base base-receipt-agent changed"],
            CREATE: ["base base-receipt-label changed"],
        },
    ),
}


def test_seed_scenarios_through_the_cli(tmp_path: Path, home: Path) -> None:
    calls = {}
    for key, (edit, _, _) in SEED_SCENARIOS.items():
        repo = seed_repo(tmp_path / key)
        prepend(repo, edit, "# Testing async build")
        calls[key] = {"args": ("plan", "--json", "--since", "HEAD"), "cwd": repo, "home": home}
    for key, proc in run_many(calls).items():
        _, expected, reasons = SEED_SCENARIOS[key]
        entries = entries_of(proc)
        assert rebuilt(entries) == expected, key
        assert {n: entries[n]["reasons"] for n in reasons} == reasons, key


def test_revert_through_the_cli_gives_back_the_tags_and_nothing_to_do(
    repo: Path, home: Path
) -> None:
    original = {img.name: img.tag for img in worktree_versions(repo)}
    for rel in (HANDLER, AGENT, DYNAMO):
        prepend(repo, rel, "# Testing async build")
    assert not set(original.values()) & {img.tag for img in worktree_versions(repo)}
    git(repo, "checkout", "--", HANDLER, AGENT, DYNAMO)
    runs = run_many(
        {
            "json": {"args": ("plan", "--json", "--since", "HEAD"), "cwd": repo, "home": home},
            "table": {"args": ("plan", "--since", "HEAD"), "cwd": repo, "home": home},
        }
    )
    reverted = entries_of(runs["json"])
    assert rebuilt(reverted) == []
    assert {n: e["tag"] for n, e in reverted.items()} == original
    assert "0 to build, 5 unchanged" in runs["table"].stdout


def test_since_accepts_a_sha_a_tag_and_a_relative_ref(repo: Path, home: Path) -> None:
    start = head(repo)
    git(repo, "tag", "release-1")
    prepend(repo, CREATE_HANDLER, "# one")
    commit_all(repo, "one")
    prepend(repo, LABEL, "# two")
    commit_all(repo, "two")
    runs = run_many(
        {
            ref: {"args": ("plan", "--json", "--since", ref), "cwd": repo, "home": home}
            for ref in (start, "release-1", "HEAD~2")
        }
    )
    results = [entries_of(proc) for proc in runs.values()]
    assert results[0] == results[1] == results[2]
    assert rebuilt(results[0]) == ["base-receipt-label", "base-receipt-agent", HARMONIZE, CREATE]
    assert results[0][CREATE]["reasons"] == [
        f"{CREATE_HANDLER} modified",
        "base base-receipt-label changed",
    ]


def test_image_absent_at_ref_is_a_new_image(repo: Path, home: Path) -> None:
    manifest = repo / "images.yaml"
    manifest.write_text(
        manifest.read_text()
        + "  extra-image:\n    dockerfile: infra/base_images/agent/Dockerfile\n"
        + "    source_paths: [receipt_agent/pyproject.toml]\n"
    )
    entries = plan_json("--since", "HEAD", cwd=repo, home=home)
    assert rebuilt(entries) == ["extra-image"]
    assert entries["extra-image"]["reasons"] == ["new image"]


def test_repo_option_env_and_subfolder_cwd_agree(repo: Path, home: Path, tmp_path: Path) -> None:
    prepend(repo, HANDLER, "# edit")
    args = ("plan", "--json", "--since", "HEAD")
    runs = run_many(
        {
            "top": {"args": args, "cwd": repo, "home": home},
            "subfolder": {"args": args, "cwd": repo / "receipt_agent", "home": home},
            "option": {"args": (*args, "--repo", str(repo)), "cwd": tmp_path, "home": home},
            "env": {
                "args": args,
                "cwd": tmp_path,
                "home": home,
                "env": {"BUILD_ASSETS_REPO": str(repo)},
            },
        }
    )
    results = {key: entries_of(proc) for key, proc in runs.items()}
    assert rebuilt(results["top"]) == [HARMONIZE]
    assert results["top"] == results["subfolder"] == results["option"] == results["env"]


def test_manifest_in_a_subfolder(repo: Path, home: Path) -> None:
    (repo / "deploy").mkdir()
    git(repo, "mv", "images.yaml", "deploy/images.yaml")
    commit_all(repo, "move the manifest")
    prepend(repo, HANDLER, "# edit")
    entries = plan_json("--since", "HEAD", "--manifest", "deploy/images.yaml", cwd=repo, home=home)
    assert rebuilt(entries) == [HARMONIZE]


# --- the table ----------------------------------------------------------------------------------


def test_table_output(repo: Path, home: Path) -> None:
    prepend(repo, HANDLER, "# edit")
    proc = run_cli("plan", "--since", "HEAD", cwd=repo, home=home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Plan against HEAD" in out
    for name in ALL_IMAGES:
        assert name in out
    [row] = [line for line in out.splitlines() if HARMONIZE in line]
    assert "rebuild" in row and f"{HANDLER} modified" in row
    [row] = [line for line in out.splitlines() if CREATE in line]
    assert "up to date" in row
    assert "1 to build, 4 unchanged" in out


# --- build records ------------------------------------------------------------------------------


def _publish_current(repo: Path, registry: str) -> None:
    """What a build of the working tree leaves in the registry: each current tag (a tiny
    config-only image) and its provenance (the `last-build` pointer included)."""
    from build_assets.engine import provenance as pv
    from tests.engine.test_gc import _push_image

    for img in worktree_versions(repo):
        repository = f"{registry}/{img.name}"
        _push_image(repository, img.tag, "2024-01-01T00:00:00Z")
        pv.publish(repository, pv.Provenance.of(img))


def _record_current(repo: Path, home: Path, registry: str, status: str = SUCCEEDED) -> None:
    records = BuildRecords(home / "builds.sqlite")  # where the CLI's BUILD_ASSETS_HOME points
    for img in worktree_versions(repo):
        records.add(BuildRecord.for_image(img, registry, status, digest="sha256:" + "0" * 64))


@pytest.fixture
def registry(stack_env) -> str:
    """A namespace of its own in the stack's real registry."""
    return f"{stack_env.registry}/plan-{uuid.uuid4().hex[:8]}"


@pytest.mark.stack
def test_without_builds_nothing_is_built_yet(repo: Path, home: Path, registry: str) -> None:
    runs = run_many(
        {
            "table": {"args": ("plan",), "cwd": repo, "home": home, "registry": registry},
            "json": {"args": ("plan", "--json"), "cwd": repo, "home": home, "registry": registry},
        }
    )
    proc = runs["table"]
    assert proc.returncode == 0, proc.stderr
    assert "Nothing is built yet" in proc.stdout
    assert "5 to build, 0 unchanged" in proc.stdout
    entries = entries_of(runs["json"])
    assert rebuilt(entries) == ALL_IMAGES
    assert all(e["reasons"] == ["not built yet"] for e in entries.values())


@pytest.mark.stack
def test_with_builds_only_changed_images_are_rebuilt(repo: Path, home: Path, registry: str) -> None:
    _publish_current(repo, registry)
    proc = run_cli("plan", cwd=repo, home=home, registry=registry)
    assert "Nothing is built yet" not in proc.stdout
    assert "0 to build, 5 unchanged" in proc.stdout
    prepend(repo, HANDLER, "# edit")
    runs = run_many(
        {
            "same": {"args": ("plan", "--json"), "cwd": repo, "home": home, "registry": registry},
            "other": {
                "args": ("plan", "--json"),
                "cwd": repo,
                "home": home,
                "registry": registry + "-other",
            },
        }
    )
    entries = entries_of(runs["same"])
    assert rebuilt(entries) == [HARMONIZE]
    assert entries[HARMONIZE]["reasons"] == [f"{HANDLER} modified"]
    assert rebuilt(entries_of(runs["other"])) == ALL_IMAGES  # another registry: nothing built


@pytest.mark.stack
def test_the_build_records_are_not_the_truth_and_no_registry_means_nothing_built(
    repo: Path, tmp_path: Path, registry: str
) -> None:
    """Local records alone (successes or failures) build nothing; without a registry there
    is nothing to ask, and plan says so."""
    recorded = tmp_path / "recorded"
    _record_current(repo, recorded, registry)
    _record_current(repo, recorded, registry, status=FAILED)
    runs = run_many(
        {
            "recorded": {
                "args": ("plan", "--json"),
                "cwd": repo,
                "home": recorded,
                "registry": registry,
            },
            "unset": {"args": ("plan",), "cwd": repo, "home": recorded, "registry": None},
        }
    )
    assert rebuilt(entries_of(runs["recorded"])) == ALL_IMAGES
    assert runs["unset"].returncode == 0, runs["unset"].stderr
    assert "No registry is configured" in runs["unset"].stdout


# --- bad input: exit 2, one line per problem, never a traceback ---------------------------------
#
# Every failing command is run once, all of them concurrently (a module fixture), so the many
# cases cost about one interpreter start-up; each test then checks its own result.

DOCKERFILE = "infra/create_labels/lambdas/Dockerfile"
GOOD = f"    dockerfile: {DOCKERFILE}\n"

# case id -> (manifest text, the one line expected on stderr, after the manifest's path)
BAD_MANIFESTS = {
    "unknown-key": (
        f"images:\n  a:\n{GOOD}    colour: blue\n",
        ": image 'a': unknown key 'colour'",
    ),
    "bad-name": (f"images:\n  Bad_Name:\n{GOOD}", ": image 'Bad_Name': bad name"),
    "unknown-base": (
        f"images:\n  a:\n{GOOD}    base: nope\n",
        ": image 'a', field 'base': unknown image 'nope'",
    ),
    "cycle": (
        f"images:\n  a:\n{GOOD}    base: b\n  b:\n{GOOD}    base: a\n",
        ": image 'a', field 'base': cycle of bases a -> b -> a",
    ),
    "missing-source-path": (
        f"images:\n  a:\n{GOOD}    source_paths: [no/such/dir]\n",
        ": image 'a', field 'source_paths': 'no/such/dir' does not exist",
    ),
    "missing-dockerfile": (
        "images:\n  a:\n    dockerfile: missing/Dockerfile\n",
        ": image 'a', field 'dockerfile': 'missing/Dockerfile' does not exist",
    ),
    "gitignored-dockerfile": (
        "images:\n  a:\n    dockerfile: receipt_agent/.venv/Dockerfile\n",
        ": image 'a', field 'dockerfile': 'receipt_agent/.venv/Dockerfile' is not a file git"
        " tracks or sees",
    ),
    "lambda-twice": (
        f"images:\n  a:\n{GOOD}    lambda: fn\n  b:\n{GOOD}    lambda: [fn]\n",
        ": image 'b', field 'lambda': function 'fn' is already deployed by image 'a'",
    ),
    "empty-file": ("", ": no images defined"),
    "yaml-syntax": ("images:\n  a:\n\tdockerfile: x\n", ": line 3, column 1: invalid YAML"),
    "duplicate-image": (
        f"images:\n  a:\n{GOOD}  a:\n{GOOD}",
        ": line 4, column 3: invalid YAML: duplicate key 'a'",
    ),
}


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{case: (CompletedProcess, context)} of every failing command of this module."""
    tmp = tmp_path_factory.mktemp("failures")
    home = tmp / "state"
    calls: dict[str, dict] = {}
    context: dict[str, Path] = {}

    repo = seed_repo(tmp / "receipts")
    write(repo, {"receipt_agent/.venv/Dockerfile": "FROM scratch\n"})  # exists, git-ignored
    for case, (text, _) in BAD_MANIFESTS.items():
        manifest = repo / "bad" / f"{case}.yaml"
        write(repo, {f"bad/{case}.yaml": text})
        calls[case] = {"args": ("plan", "--manifest", str(manifest)), "cwd": repo, "home": home}
        context[case] = manifest

    # the default images.yaml, with and without --json / --since
    default = seed_repo(tmp / "default")
    (default / "images.yaml").write_text(BAD_MANIFESTS["unknown-key"][0])
    calls["default"] = {"args": ("plan", "--json"), "cwd": default, "home": home}
    context["default"] = default / "images.yaml"

    many = seed_repo(tmp / "many")
    (many / "images.yaml").write_text(
        "images:\n  a:\n    dockerfile: nope\n    base: zz\n    colour: 1\n  B:\n" + GOOD
    )
    calls["all-at-once"] = {"args": ("plan",), "cwd": many, "home": home}

    at_ref = seed_repo(tmp / "at-ref")
    (at_ref / "images.yaml").write_text("images:\n  a:\n    dockerfile: x\n    colour: 1\n")
    commit_all(at_ref, "broken manifest")
    (at_ref / "images.yaml").write_text(SEED_FILES["images.yaml"])
    calls["invalid-at-ref"] = {"args": ("plan", "--since", "HEAD"), "cwd": at_ref, "home": home}

    plain = tmp / "plain"
    write(plain, {"images.yaml": SEED_FILES["images.yaml"]})
    context["plain"] = plain
    calls["not-git-option"] = {"args": ("plan", "--repo", str(plain)), "cwd": tmp, "home": home}
    calls["not-git-cwd"] = {"args": ("plan",), "cwd": plain, "home": home}
    calls["no-such-folder"] = {
        "args": ("plan", "--repo", str(tmp / "nowhere")),
        "cwd": tmp,
        "home": home,
    }

    calls["unknown-ref"] = {"args": ("plan", "--since", "no-such-ref"), "cwd": repo, "home": home}

    bare = make_repo(tmp / "no-manifest", {"README.md": "no manifest here\n"})
    context["no-manifest"] = bare
    calls["manifest-missing"] = {"args": ("plan",), "cwd": bare, "home": home}

    fresh = make_repo(tmp / "fresh", {"README.md": "x\n"})
    write(fresh, SEED_FILES)  # all uncommitted: HEAD has no images.yaml
    calls["manifest-absent-at-ref"] = {
        "args": ("plan", "--since", "HEAD"),
        "cwd": fresh,
        "home": home,
    }

    results = run_many(calls)
    return {key: (proc, context) for key, proc in results.items()}


def problems(failures: dict, case: str) -> list[str]:
    """The problem lines of a failed command (asserting exit 2, no traceback, no output)."""
    proc, _ = failures[case]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("build-assets: error: ") for line in lines), lines
    return [line.removeprefix("build-assets: error: ") for line in lines]


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_one_line_naming_file_image_and_field(failures: dict, case: str) -> None:
    [line] = problems(failures, case)
    manifest = failures[case][1][case]
    assert line.startswith(str(manifest) + BAD_MANIFESTS[case][1]), line


def test_bad_default_manifest_with_json(failures: dict) -> None:
    manifest = failures["default"][1]["default"]
    assert problems(failures, "default") == [f"{manifest}: image 'a': unknown key 'colour'"]


def test_every_problem_is_reported_at_once(failures: dict) -> None:
    lines = problems(failures, "all-at-once")
    text = "\n".join(lines)
    for fragment in (
        "image 'a': unknown key 'colour'",
        "image 'a', field 'base': unknown image 'zz'",
        "image 'a', field 'dockerfile': 'nope' does not exist",
        "image 'B': bad name",
    ):
        assert fragment in text
    assert len(lines) == 4


def test_invalid_manifest_at_ref_names_the_ref(failures: dict) -> None:
    assert problems(failures, "invalid-at-ref") == [
        "images.yaml@HEAD: image 'a': unknown key 'colour'"
    ]


def test_not_a_git_repository(failures: dict) -> None:
    plain = failures["not-git-option"][1]["plain"]
    [line] = problems(failures, "not-git-option")
    assert line.startswith(f"{plain}: not a git repository")
    [line] = problems(failures, "not-git-cwd")  # no --repo, the cwd is in no repository
    assert "not a git repository" in line
    [line] = problems(failures, "no-such-folder")
    assert "nowhere" in line


def test_unknown_ref(failures: dict) -> None:
    [line] = problems(failures, "unknown-ref")
    assert line.startswith("unknown git ref 'no-such-ref'")


def test_manifest_missing(failures: dict) -> None:
    bare = failures["manifest-missing"][1]["no-manifest"]
    [line] = problems(failures, "manifest-missing")
    assert line.startswith(f"{bare / 'images.yaml'}: manifest not found")


def test_manifest_absent_at_ref(failures: dict) -> None:
    [line] = problems(failures, "manifest-absent-at-ref")
    assert line.startswith("images.yaml: does not exist at HEAD")


# --- bugs found by these tests, fixed -----------------------------------------------------


def test_table_shows_file_names_with_brackets_literally(repo: Path, home: Path) -> None:
    write(repo, {"receipt_agent/[id].py": "x\n"})
    out = run_cli("plan", "--since", "HEAD", cwd=repo, home=home).stdout
    assert "new file receipt_agent/[id].py" in out


def test_closed_stdout_gives_no_traceback(repo: Path, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env["BUILD_ASSETS_HOME"] = str(home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "build_assets", "plan", "--json"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # type: ignore[union-attr]  # the reader went away before any output
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    proc.wait()
    assert "Traceback" not in err


@pytest.mark.stack
def test_clean_tree_plan_from_the_cache_matches_the_full_plan(
    repo: Path, home: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second `plan` of a clean tree is answered from the version cache (no manifest
    validation, no hashing) and says exactly what the full computation says."""
    from build_assets.cli.plan import _plan_from_cache
    from build_assets.core.gitrepo import WorktreeScan
    from build_assets.core.plan import compare
    from build_assets.engine import provenance as pv
    from build_assets.settings import Settings

    monkeypatch.setenv("BUILD_ASSETS_HOME", str(home))
    monkeypatch.setenv("BUILD_ASSETS_REGISTRY", registry)
    first = json.loads(run_cli("plan", "--json", cwd=repo, home=home, registry=registry).stdout)
    settings = Settings.resolve(repo=repo)
    fast = _plan_from_cache(WorktreeScan(repo), settings, {}, None)
    assert fast is not None
    assert {"images": [e.to_dict() for e in fast[0]]} == first
    full = compare(worktree_versions(repo), {}, "not built yet")
    assert [e.to_dict() for e in fast[0]] == [e.to_dict() for e in full]
    # an image built at another version needs file-level reasons: the cache steps aside
    img = worktree_versions(repo)["base-receipt-dynamo"]
    other = pv.Provenance(img.name, "0" * 64, None, img.identity, img.files)
    pv.publish(f"{registry}/{img.name}", other)
    truth: dict = {}
    assert _plan_from_cache(WorktreeScan(repo), settings, truth, None) is None
    assert truth[img.name][1].last == other  # the registry's answer, kept for the full path
    # and a dirty tree never uses it
    (repo / "receipt_dynamo" / "client.py").write_text("# changed\n")
    assert _plan_from_cache(WorktreeScan(repo), settings, {}, None) is None
