"""What is built, asked of ECR through its API (issue 13), on a real moto server over HTTP.

moto serves the ECR API (batch_get_image, put_image, batch_delete_image, tag immutability) but
not the registry's HTTP API, so provenance blobs come from the local provenance cache here
(content-addressed: a cached blob is exactly the registry's); reading them over HTTPS from a
real ECR registry was not run on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from build_assets.aws import ecr
from build_assets.core.context import ContextFile
from build_assets.engine import provenance as pv
from tests.aws_plugin import REGION, REGISTRY


@pytest.fixture
def batch_calls(aws) -> Iterator[list[int]]:
    """The number of image ids of every batch_get_image call our ECR client makes."""
    calls: list[int] = []

    def count(params, **_) -> None:
        calls.append(len(params["imageIds"]))

    client = ecr._client(REGION)
    client.meta.events.register("provide-client-params.ecr.BatchGetImage", count)
    yield calls
    client.meta.events.unregister("provide-client-params.ecr.BatchGetImage", count)


def _immutable_repo(aws, name: str) -> None:
    aws.client("ecr").create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")


def _provenance(image: str, version: str) -> pv.Provenance:
    files = (ContextFile(f"src/{image}/app.py", "100644", version[:40]),)
    return pv.Provenance(image, version, None, {"dockerfile": "Dockerfile"}, files)


def test_tags_are_asked_at_most_100_per_call(aws, ecr_push, batch_calls) -> None:
    _immutable_repo(aws, "many")
    pushed = {f"git-{i:03d}": ecr_push("many", f"git-{i:03d}", seed=str(i)) for i in range(150)}
    asked = [*pushed, "git-absent-1", "git-absent-2"]

    found = ecr.tagged_images(f"{REGISTRY}/many", asked)

    assert {tag: image.digest for tag, image in found.items()} == pushed
    assert batch_calls == [100, 52]
    assert ecr.tagged_images(f"{REGISTRY}/no-such-repository", ["git-000"]) == {}


def test_registry_states_from_ecr_in_one_call_per_image(aws, ecr_push, batch_calls, tmp_path):
    cache = pv.ProvenanceCache(tmp_path / "provenance")
    for name in ("built", "stale", "never"):
        _immutable_repo(aws, f"team/{name}")
    digest = ecr_push("team/built", "git-aaaaaaaaaaaa")
    # `stale`: an older version was built; its provenance artifact is the last-build pointer
    older = _provenance("stale", "b" * 64)
    data = older.to_bytes()
    cache.put(older.digest, data)
    pv._move_pointer(f"{REGISTRY}/team/stale", pv._artifact(older, older.digest, len(data)))

    states = pv.registry_states(
        REGISTRY,
        [
            ("built", "git-aaaaaaaaaaaa"),
            ("stale", "git-cccccccccccc"),
            ("never", "git-dddddddddddd"),
        ],
        cache,
        repository_of=lambda image: f"team/{image}",
    )

    assert states["built"] == pv.RegistryState(digest)
    assert states["stale"] == pv.RegistryState(None, older)
    assert states["never"] == pv.RegistryState(None, None)
    assert sorted(batch_calls) == [2, 2, 2]  # current tag + last-build, together


def test_last_build_pointer_moves_on_an_immutable_repository(aws, ecr_push) -> None:
    _immutable_repo(aws, "svc")
    repository = f"{REGISTRY}/svc"
    ecr_push("svc", "git-000000000001")
    with pytest.raises(ClientError, match="AlreadyExists"):
        ecr_push("svc", "git-000000000001", seed="other")  # moto enforces IMMUTABLE

    first, second = _provenance("svc", "1" * 64), _provenance("svc", "2" * 64)
    for prov in (first, second, second):  # moved twice, then once more to the same place
        body = pv._artifact(prov, prov.digest, len(prov.to_bytes()))
        pv._move_pointer(repository, body)
        pointer = ecr.tagged_images(repository, [pv.POINTER_TAG])[pv.POINTER_TAG]
        assert pointer.manifest["annotations"]["org.build-assets.version"] == prov.version
    # the image tags are untouched; the pointer is one image, not a pile of untagged ones
    images = aws.client("ecr").list_images(repositoryName="svc")["imageIds"]
    assert sorted(i.get("imageTag", "") for i in images) == ["git-000000000001", "last-build"]
