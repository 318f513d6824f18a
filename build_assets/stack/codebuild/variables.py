"""Variables a build resolves from moto: Parameter Store and Secrets Manager references."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from build_assets.stack.codebuild.source import SourceError


def secret_value(client: Any, ref: str) -> str:
    """`secret-id[:json-key[:version-stage[:version-id]]]` (the id may be an ARN)."""
    parts = ref.split(":")
    if ref.startswith("arn:") and len(parts) >= 7:
        secret_id, rest = ":".join(parts[:7]), parts[7:]
    else:
        secret_id, rest = parts[0], parts[1:]
    key, stage, version = (rest + ["", "", ""])[:3]
    kwargs: dict[str, Any] = {"SecretId": secret_id}
    if stage:
        kwargs["VersionStage"] = stage
    if version:
        kwargs["VersionId"] = version
    value = client.get_secret_value(**kwargs).get("SecretString", "")
    if key:
        doc = json.loads(value)
        if key not in doc:
            raise KeyError(f"secret {secret_id} has no JSON key {key}")
        value = str(doc[key])
    return value


def resolve(kind: str, ref: str, ssm: Any, secrets: Any) -> str:
    """The value of a PARAMETER_STORE or SECRETS_MANAGER reference; SourceError if none."""
    try:
        if kind == "PARAMETER_STORE":
            return ssm.get_parameter(Name=ref, WithDecryption=True)["Parameter"]["Value"]
        return secret_value(secrets, ref)
    except (ClientError, BotoCoreError, KeyError, ValueError) as exc:
        what = "parameter" if kind == "PARAMETER_STORE" else "secret"
        raise SourceError(f"Decrypted Variables Error: {what} {ref}: {exc}") from None
