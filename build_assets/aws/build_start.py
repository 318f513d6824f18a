"""What a StartBuild call carries for one image version, and how an earlier build is recognised
as the same version: the script's environment variables and secrets, and the idempotency token
(same image, version, attempt and parameters -> the same build). Plain values in, CodeBuild's
shapes out: the builder (`engine.builders.codebuild`) maps a `BuildRequest` to them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from build_assets.errors import UserError

VERSION_VARIABLE = "BUILD_ASSETS_VERSION"
IMAGE_VARIABLE = "BUILD_ASSETS_IMAGE"
_SECRET_TYPES = {"ssm": "PARAMETER_STORE", "secretsmanager": "SECRETS_MANAGER"}


def idempotency_token(
    image: str, version: str, attempt: int, params: Mapping[str, Any] | None = None
) -> str:
    """StartBuild token: same image version, attempt and parameters -> same build (5 minutes).

    The parameters are part of it because CodeBuild rejects a reused token whose parameters
    differ (e.g. two runs with different CACHE_FROM): those get two builds instead of an error.
    """
    blob = json.dumps([image, version, attempt, params], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:48]


def parse_secrets(secrets: Mapping[str, str] | None) -> list[dict[str, str]]:
    """`{NAME: "ssm:/param" | "secretsmanager:arn-or-name"}` -> CodeBuild env var overrides."""
    out = []
    for name, ref in sorted((secrets or {}).items()):
        kind, sep, value = ref.partition(":")
        if not sep or kind not in _SECRET_TYPES or not value:
            raise UserError(
                f"secret {name}: reference {ref!r} must be 'ssm:<parameter name>' or"
                " 'secretsmanager:<secret arn or name>'"
            )
        out.append({"name": name, "value": value, "type": _SECRET_TYPES[kind]})
    return out


def build_environment(
    variables: Mapping[str, str], secret_vars: Sequence[dict[str, str]]
) -> list[dict[str, str]]:
    """The build script's `variables` (the non-empty ones) followed by the secrets."""
    taken = {v["name"] for v in secret_vars} & set(variables)
    if taken:
        raise UserError(f"secret names clash with build variables: {', '.join(sorted(taken))}")
    return [{"name": k, "value": v, "type": "PLAINTEXT"} for k, v in variables.items() if v] + list(
        secret_vars
    )


def env_value(build: Mapping[str, Any], name: str) -> str | None:
    """The value of one environment variable a build was started with."""
    for var in build.get("environment", {}).get("environmentVariables", []) or []:
        if var.get("name") == name:
            return var.get("value")
    return None


def is_same_version(build: Mapping[str, Any], version: str, tag: str, key: str) -> bool:
    """True when `build` builds `version` (older builds: same `tag` and context `key`)."""
    if env_value(build, VERSION_VARIABLE) == version:
        return True
    location = (build.get("source") or {}).get("location", "")
    return env_value(build, "IMAGE_TAG") == tag and location.endswith(key)
