"""Deploy a function as its manifest entry says: `$LATEST`, a version behind an alias, or not
at all (`deploy: none`: infrastructure code deploys it; only the drift check runs).

With an alias a deploy updates `$LATEST` (`deploy.deploy_function`: waits and reads it back),
publishes a version (`CodeSha256` pinned, so a concurrent code change is refused, and the
image URI in the version's description), then points the alias at it. What a version runs is
read from that description when build-assets published it (versions are immutable, so it
never goes stale), else from `Code.ImageUri`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from build_assets.aws.clients import aws_errors, error_code
from build_assets.core.functions import FunctionSpec
from build_assets.engine.deploy import DeployResult, deploy_function

log = logging.getLogger(__name__)

NOTE = "build-assets: "  # version description: NOTE + the digest-pinned image URI
MAX_DESCRIPTION = 256  # Lambda's limit on a version description


@dataclass(frozen=True)
class Release:
    """What a function (its alias when it has one) runs after a deploy or drift check."""

    function: str
    mode: str  # "direct" | "none"
    alias: str | None
    wanted: str  # the image build-assets published for it
    image: str | None  # what it runs now (None: the function or alias does not exist)
    previous_image: str | None
    changed: bool
    version: str | None = None  # the version the alias points at
    previous_version: str | None = None
    held: bool = False  # a rollback holds it: not redeployed
    resolved_image_uri: str | None = None

    @property
    def in_sync(self) -> bool:
        return self.image == self.wanted

    def as_deploy_result(self) -> DeployResult:
        return DeployResult(
            self.function,
            self.previous_image,
            self.image or "",
            self.changed,
            self.resolved_image_uri,
        )


def note_of(uri: str) -> str | None:
    """The version description recording `uri` (None when it would not fit)."""
    text = NOTE + uri
    return text if len(text) <= MAX_DESCRIPTION else None


def _noted(description: str | None) -> str | None:
    if description and description.startswith(NOTE) and "@sha256:" in description:
        return description.removeprefix(NOTE).strip()
    return None


def _get(client: Any, function: str, qualifier: str | None) -> dict | None:
    kwargs = {"FunctionName": function}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    with aws_errors("read Lambda function", f"{function}:{qualifier}" if qualifier else function):
        try:
            return client.get_function(**kwargs)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return None


def _image_in(answer: dict) -> str | None:
    config, code = answer.get("Configuration", {}), answer.get("Code", {})
    if config.get("Version", "$LATEST") != "$LATEST":
        noted = _noted(config.get("Description"))
        if noted:
            return noted
    return code.get("ImageUri")


def running_image(client: Any, function: str, alias: str | None = None) -> str | None:
    """The image `function` runs (behind `alias` when given); None when either is missing."""
    answer = _get(client, function, alias)
    return None if answer is None else _image_in(answer)


def alias_version(client: Any, function: str, alias: str) -> str | None:
    with aws_errors("read Lambda alias", f"{function}:{alias}"):
        try:
            return client.get_alias(FunctionName=function, Name=alias)["FunctionVersion"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return None


def _pages(client: Any, call: str, key: str, function: str) -> Iterator[dict]:
    marker = None
    while True:
        kwargs = {"FunctionName": function, **({"Marker": marker} if marker else {})}
        page = getattr(client, call)(**kwargs)
        yield from page.get(key, [])
        marker = page.get("NextMarker")
        if not marker:
            return


@dataclass(frozen=True)
class Version:
    """A published version: the image it runs, and every image it may run (the one noted
    in its description and `Code.ImageUri`; gc keeps both)."""

    number: str
    image: str | None
    images: frozenset[str]


def published_versions(client: Any, function: str) -> dict[str, Version]:
    """Published version number -> Version, oldest first."""
    out: dict[str, Version] = {}
    with aws_errors("list Lambda versions", function):
        try:
            listed = [v for v in _pages(client, "list_versions_by_function", "Versions", function)]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return {}
    for v in listed:
        number = v.get("Version")
        if not number or number == "$LATEST":
            continue
        answer = _get(client, function, number) or {}
        image = _noted(v.get("Description")) or _image_in(answer)
        coded = answer.get("Code", {}).get("ImageUri")
        out[number] = Version(number, image, frozenset(u for u in (image, coded) if u))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def deployed_images(client: Any, function: str) -> dict[str, str]:
    """Every image `function` may run, as image URI -> where: `$LATEST`, each published
    version and each alias (what `gc` must keep)."""
    out: dict[str, str] = {}
    latest = _get(client, function, None)
    if latest is None:
        return out
    uri = latest.get("Code", {}).get("ImageUri")
    if uri:
        out[uri] = f"Lambda function {function}"
    versions = published_versions(client, function)
    with aws_errors("list Lambda aliases", function):
        aliases = list(_pages(client, "list_aliases", "Aliases", function))
    behind = {a["FunctionVersion"]: a["Name"] for a in aliases}
    for number, version in versions.items():
        where = f"Lambda function {function}:{number}"
        if number in behind:
            where += f" (alias {behind[number]})"
        for image in sorted(version.images):
            out.setdefault(image, where)
    return out


def _wait_version(client: Any, function: str, version: str) -> None:
    try:
        client.get_waiter("published_version_active").wait(
            FunctionName=function,
            Qualifier=version,
            WaiterConfig={"Delay": 2, "MaxAttempts": 60},
        )
    except WaiterError as exc:
        from build_assets.errors import UserError

        raise UserError(f"Lambda {function}: version {version} did not become active") from exc


def point_alias(client: Any, function: str, alias: str, version: str) -> None:
    """Create `alias` at `version`, or move it there; read back."""
    where = f"{function}:{alias}"
    with aws_errors("update Lambda alias", where):
        if alias_version(client, function, alias) is None:
            client.create_alias(FunctionName=function, Name=alias, FunctionVersion=version)
        else:
            client.update_alias(FunctionName=function, Name=alias, FunctionVersion=version)
    now = alias_version(client, function, alias)
    if now != version:
        from build_assets.errors import UserError

        raise UserError(f"Lambda {where} points at version {now} after the update, not {version}")


def publish_version(client: Any, function: str, uri: str) -> str:
    """Publish `$LATEST` (which runs `uri`) as a version; its number."""
    answer = _get(client, function, None) or {}
    sha = answer.get("Configuration", {}).get("CodeSha256")
    kwargs: dict[str, Any] = {"FunctionName": function}
    note = note_of(uri)
    if note:
        kwargs["Description"] = note
    if sha:
        kwargs["CodeSha256"] = sha  # refused when $LATEST changed since we verified it
    with aws_errors("publish Lambda version", function):
        version = client.publish_version(**kwargs)["Version"]
    _wait_version(client, function, version)
    return version


def release_alias(
    client: Any,
    spec: FunctionSpec,
    uri: str,
    *,
    create_if_missing: bool = False,
    role_arn: str | None = None,
    media_type: Callable[[str], str | None] | None = None,
) -> Release:
    """Make `spec.alias` of `spec.name` run `uri`: update, wait, publish, point the alias
    (`media_type` as `deploy_function` takes it; default: asked of the registry)."""
    assert spec.alias is not None
    fn, alias = spec.name, spec.alias
    before_version = alias_version(client, fn, alias) if _get(client, fn, None) else None
    before = running_image(client, fn, alias) if before_version else None
    if before == uri:
        return Release(fn, spec.deploy, alias, uri, uri, uri, False, before_version, before_version)
    extra = {"media_type": media_type} if media_type is not None else {}
    deployed = deploy_function(
        client, fn, uri, create_if_missing=create_if_missing, role_arn=role_arn, **extra
    )
    version = publish_version(client, fn, uri)
    point_alias(client, fn, alias, version)
    log.info("%s:%s: version %s -> %s (%s)", fn, alias, before_version, version, uri)
    return Release(
        fn,
        spec.deploy,
        alias,
        uri,
        uri,
        before,
        True,
        version,
        before_version,
        resolved_image_uri=deployed.resolved_image_uri,
    )


def drift_check(client: Any, spec: FunctionSpec, uri: str) -> Release:
    """What a function infrastructure code deploys (`deploy: none`) runs, against `uri`."""
    now = running_image(client, spec.name, spec.alias)
    version = alias_version(client, spec.name, spec.alias) if spec.alias and now else None
    return Release(spec.name, spec.deploy, spec.alias, uri, now, now, False, version, version)
