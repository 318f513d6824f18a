"""The local stack's ECR (issue 19, item 2): its registry and its ECR API agree.

All against the real stack: dockerd, the CNCF registry behind `stack.ecr_registry`, moto over
HTTP (the ECR API through `AWS_ENDPOINT_URL_ECR`, the proxy, as `stack up` exports it). Images
are built by the engine and pushed with `docker push`; repositories made in the ECR API follow
ECR's rules, others behave as a plain registry.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from build_assets.aws.clients import make_client
from build_assets.core.context import ContextFile
from build_assets.core.versioning import worktree_versions
from build_assets.engine import preflight
from build_assets.engine import provenance as pv
from build_assets.engine import registry as reg
from build_assets.engine.builders.local import LocalDockerBuilder
from build_assets.engine.scheduler import BUILT, CACHED, BuildScheduler
from build_assets.errors import UserError
from build_assets.project import Project
from build_assets.stack.ecr_state import immutable_message
from tests.gitutil import make_repo

pytestmark = pytest.mark.stack


def _docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, input=input, timeout=300)


_TAGGED: list[str] = []  # engine references made here, removed after the module


@pytest.fixture(scope="module")
def images(local_stack, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Two different tiny images in the engine (content 'one' / 'two'): name -> local ref."""
    found = {}
    for content in ("one", "two"):
        folder = tmp_path_factory.mktemp(f"ctx-{content}")
        (folder / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
        (folder / "a").write_text(content + "\n")
        ref = f"ecr-test-local/{content}:{uuid.uuid4().hex[:8]}"
        res = _docker("build", "-q", "-t", ref, str(folder))
        assert res.returncode == 0, res.stderr.decode()
        found[content] = ref
        _TAGGED.append(ref)
    yield found
    _docker("rmi", *_TAGGED)
    _TAGGED.clear()


def _push(local: str, target: str) -> subprocess.CompletedProcess:
    assert _docker("tag", local, target).returncode == 0
    _TAGGED.append(target)
    return _docker("push", target)


def _head(repository: str, reference: str) -> tuple[str | None, str | None]:
    """(digest, media type) the registry answers for a HEAD."""
    return reg.manifest_digest(repository, reference), reg.manifest_media_type(
        repository, reference
    )


def _ecr_image(name: str, tag: str) -> tuple[str, str, str]:
    """(describe_images digest, its media type, sha256 of batch_get_image's manifest)."""
    ecr = make_client("ecr")
    detail = ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": tag}])
    [image] = detail["imageDetails"]
    got = ecr.batch_get_image(
        repositoryName=name, imageIds=[{"imageTag": tag}], acceptedMediaTypes=reg.MANIFEST_TYPES
    )["images"][0]
    assert got["imageId"]["imageDigest"] == image["imageDigest"]
    assert got["imageManifestMediaType"] == image["imageManifestMediaType"]
    body_digest = "sha256:" + hashlib.sha256(got["imageManifest"].encode()).hexdigest()
    return image["imageDigest"], image["imageManifestMediaType"], body_digest


def _repo(mutability: str | None) -> str:
    """A fresh repository name; created in the ECR API unless `mutability` is None."""
    name = f"ecr-{uuid.uuid4().hex[:8]}/app"
    if mutability:
        make_client("ecr").create_repository(repositoryName=name, imageTagMutability=mutability)
    return name


def test_immutable_tag_is_refused_and_keeps_its_digest(stack_env, images) -> None:
    name = _repo("IMMUTABLE")
    target = f"{stack_env.registry}/{name}:git-000000000001"
    first = _push(images["one"], target)
    assert first.returncode == 0, first.stderr.decode()
    stored, media_type = _head(f"{stack_env.registry}/{name}", "git-000000000001")

    second = _push(images["two"], target)

    assert second.returncode != 0
    assert f"tag invalid: {immutable_message('git-000000000001', name)}" in second.stderr.decode()
    assert _head(f"{stack_env.registry}/{name}", "git-000000000001") == (stored, media_type)
    assert _ecr_image(name, "git-000000000001") == (stored, media_type, stored)
    # the same content again is refused too, as ECR refuses it
    again = _push(images["one"], target)
    assert again.returncode != 0 and "tag invalid" in again.stderr.decode()


def _raw_manifest(repository: str, reference: str) -> tuple[bytes, str]:
    ref = reg.parse_repository(repository)
    request = urllib.request.Request(
        f"{ref.base_url}/manifests/{reference}", headers={"Accept": reg.ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read(), resp.headers["Content-Type"]


def test_of_two_racing_pushes_of_one_immutable_tag_exactly_one_wins(stack_env, images) -> None:
    name = _repo("IMMUTABLE")
    repository = f"{stack_env.registry}/{name}"
    manifests = {}
    for content in ("one", "two"):  # blobs in place (under other tags), as a push has them
        assert _push(images[content], f"{repository}:src-{content}").returncode == 0
        manifests[content] = _raw_manifest(repository, f"src-{content}")
    assert manifests["one"][0] != manifests["two"][0]
    barrier = threading.Barrier(2)

    def put(content: str) -> str:
        body, media_type = manifests[content]
        barrier.wait(timeout=30)  # both manifest PUTs leave together
        try:
            return reg.put_manifest(repository, "git-000000000002", body, media_type)
        except reg.TagExistsError as exc:
            return str(exc)

    with ThreadPoolExecutor(2) as pool:
        answers = dict(zip(("one", "two"), pool.map(put, ("one", "two")), strict=True))

    won = [c for c, a in answers.items() if a.startswith("sha256:")]
    assert len(won) == 1, answers
    [lost] = {"one", "two"} - set(won)
    assert immutable_message("git-000000000002", name) in answers[lost]
    stored = reg.manifest_digest(repository, "git-000000000002")
    assert stored == answers[won[0]]
    assert _ecr_image(name, "git-000000000002")[0] == stored


def test_every_pushed_manifest_is_in_the_ecr_api(stack_env, images) -> None:
    name = _repo("MUTABLE")
    repository = f"{stack_env.registry}/{name}"
    for content in ("one", "two"):  # a mutable tag moves, in both
        assert _push(images[content], f"{repository}:latest").returncode == 0
        digest, media_type = _head(repository, "latest")
        assert _ecr_image(name, "latest") == (digest, media_type, digest)
    assert media_type == "application/vnd.docker.distribution.manifest.v2+json"
    listed = make_client("ecr").list_images(repositoryName=name)["imageIds"]
    assert [i["imageDigest"] for i in listed if i.get("imageTag") == "latest"] == [digest]


def test_deletes_through_either_api_reach_the_other(stack_env, images) -> None:
    name = _repo("IMMUTABLE")
    repository = f"{stack_env.registry}/{name}"
    for tag in ("git-aaaaaaaaaaaa", "keep"):
        assert _push(images["one"], f"{repository}:{tag}").returncode == 0
    assert _push(images["two"], f"{repository}:git-bbbbbbbbbbbb").returncode == 0
    one, _ = _head(repository, "keep")
    two, _ = _head(repository, "git-bbbbbbbbbbbb")
    ecr = make_client("ecr")

    # ECR API, a tag of an image with another tag: only that tag goes
    ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "git-aaaaaaaaaaaa"}])
    assert reg.manifest_digest(repository, "git-aaaaaaaaaaaa") is None
    assert reg.manifest_digest(repository, "keep") == one
    # ECR API, the last tag: the image goes
    ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "keep"}])
    assert reg.get_manifest(repository, one) is None
    # the registry (what `gc` calls): the ECR API forgets it
    assert reg.delete_manifest(repository, two)
    with pytest.raises(ClientError, match="ImageNotFound"):
        ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": two}])
    assert ecr.list_images(repositoryName=name)["imageIds"] == []
    assert reg.list_tags(repository) == []


def test_repositories_unknown_to_ecr_behave_as_a_plain_registry(stack_env, images) -> None:
    name = _repo(None)
    repository = f"{stack_env.registry}/{name}"
    assert _push(images["one"], f"{repository}:git-000000000001").returncode == 0
    first = reg.manifest_digest(repository, "git-000000000001")
    moved = _push(images["two"], f"{repository}:git-000000000001")
    assert moved.returncode == 0, moved.stderr.decode()
    assert reg.manifest_digest(repository, "git-000000000001") not in (None, first)
    with pytest.raises(ClientError, match="RepositoryNotFoundException"):
        make_client("ecr").describe_images(repositoryName=name)


def test_last_build_pointer_moves_on_an_immutable_repository(stack_env) -> None:
    name = _repo("IMMUTABLE")
    repository = f"{stack_env.registry}/{name}"
    for version in ("a" * 64, "b" * 64):
        files = (ContextFile("app.py", "100644", version[:40]),)
        prov = pv.Provenance("app", version, None, {"dockerfile": "Dockerfile"}, files)
        pv.publish(repository, prov)
        pointed = pv.fetch(repository, pv.POINTER_TAG)
        assert pointed is not None and pointed.version == version
        digest, media_type = _head(repository, pv.POINTER_TAG)
        assert _ecr_image(name, pv.POINTER_TAG) == (digest, media_type, digest)
    # both provenance artifacts are still there; only the pointer moved
    assert {t for t in reg.list_tags(repository) if t != pv.POINTER_TAG} == {
        pv.provenance_tag("a" * 64),
        pv.provenance_tag("b" * 64),
    }


def test_put_image_through_the_api_reaches_the_registry_or_is_refused(stack_env, images) -> None:
    name = _repo("IMMUTABLE")
    repository = f"{stack_env.registry}/{name}"
    assert _push(images["one"], f"{repository}:pushed").returncode == 0
    body = json.dumps(reg.get_manifest(repository, "pushed"))  # same blobs, other bytes
    ecr = make_client("ecr")

    put = ecr.put_image(repositoryName=name, imageManifest=body, imageTag="retagged")

    assert put["image"]["imageId"]["imageDigest"] == reg.manifest_digest(repository, "retagged")
    assert (
        put["image"]["imageId"]["imageDigest"]
        == "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    )
    missing = json.loads(body)
    missing["layers"][0]["digest"] = "sha256:" + "0" * 64
    with pytest.raises(ClientError, match="LayersNotFoundException"):
        ecr.put_image(repositoryName=name, imageManifest=json.dumps(missing), imageTag="ghost")
    assert reg.manifest_digest(repository, "ghost") is None


def test_codebuild_preflight_names_a_missing_repository(stack_env) -> None:
    present = _repo("IMMUTABLE")
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    registry = stack_env.registry

    with pytest.raises(UserError) as caught:
        preflight.for_materialize(
            registry,
            local=False,
            functions=False,
            ecr=[f"{registry}/{present}", f"{registry}/{ghost}"],
            env="qa",
        )

    assert caught.value.lines == [
        f"ECR repository {ghost} not found: the codebuild backend pushes only to existing"
        " repositories, as ECR does; run `build-assets bootstrap --env qa` first"
    ]
    preflight.for_materialize(registry, local=False, functions=False, ecr=[f"{registry}/{present}"])


def test_a_codebuild_run_names_its_missing_repository_first(stack_env, tmp_path) -> None:
    image = f"svc-{uuid.uuid4().hex[:8]}"
    repo = make_repo(
        tmp_path / "mono",
        {
            "images.yaml": f"images:\n  {image}:\n    dockerfile: Dockerfile\n",
            "Dockerfile": "FROM scratch\n",
        },
    )
    project = Project.from_env(repo=str(repo), backend="codebuild", env="dev")
    project.versions()

    with pytest.raises(UserError) as caught:
        project.preflight("for_materialize", functions=False, images=[image])

    assert caught.value.lines == [
        f"ECR repository {image} not found: the codebuild backend pushes only to existing"
        " repositories, as ECR does; run `build-assets bootstrap --env dev` first"
    ]
    make_client("ecr").create_repository(repositoryName=image, imageTagMutability="IMMUTABLE")
    project.preflight("for_materialize", functions=False, images=[image])


class _AfterBoth:
    """A builder that starts a build only once both racing workers have looked the tag up
    (so each has seen it absent): the race, made certain instead of likely."""

    def __init__(self, builder: LocalDockerBuilder, barrier: threading.Barrier) -> None:
        self._builder, self._barrier = builder, barrier

    def __getattr__(self, name: str):
        return getattr(self._builder, name)

    def start(self, request):
        self._barrier.wait(timeout=60)
        return self._builder.start(request)


def test_a_worker_losing_the_push_race_reuses_the_winners_digest(stack_env, tmp_path) -> None:
    repo = make_repo(
        tmp_path / "mono",
        {
            "images.yaml": "images:\n  racer:\n    dockerfile: racer/Dockerfile\n"
            "    source_paths: [racer/app.txt]\n",
            "racer/Dockerfile": "FROM scratch\nCOPY racer/app.txt /app.txt\n",
            "racer/app.txt": f"{uuid.uuid4()}\n",
        },
    )
    versions = worktree_versions(repo)
    prefix = f"{stack_env.registry}/race-{uuid.uuid4().hex[:8]}"
    name = prefix.split("/", 1)[1] + "/racer"
    make_client("ecr").create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    barrier = threading.Barrier(2)
    workers = [
        BuildScheduler(
            _AfterBoth(LocalDockerBuilder(tmp_path / f"w{i}", registry_host=None), barrier),
            prefix,
        )
        for i in (1, 2)
    ]

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda w: list(w.run(versions, ["racer"])), workers))

    outcomes = [run[0] for run in runs]
    _TAGGED.append(f"{prefix}/racer:{versions['racer'].tag}")  # removed with the module
    assert sorted(o.status for o in outcomes) == sorted([BUILT, CACHED])
    stored = reg.manifest_digest(f"{prefix}/racer", versions["racer"].tag)
    assert {o.result.digest for o in outcomes} == {stored}
    assert _ecr_image(name, versions["racer"].tag)[0] == stored
    logs = [p.read_text() for p in tmp_path.glob("w*/logs/*.log")]
    assert sum("cannot be overwritten because the repository is immutable" in t for t in logs) == 1
