"""Buildspec version 0.2: the parts a build runs (env, phases, on-failure, finally).

`parse` turns the YAML text into a `Buildspec` or raises `BuildspecError` with the message
CodeBuild gives in the DOWNLOAD_SOURCE phase context (status code YAML_FILE_ERROR). Fields this
service does not run (artifacts, reports, cache, batch, run-as, proxy, git-credential-helper)
are accepted and ignored, as listed in docs/codebuild.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

PHASES = ("install", "pre_build", "build", "post_build")
SHELLS = {"bash": "bash", "/bin/sh": "sh", "sh": "sh", "/bin/bash": "bash"}
ON_FAILURE = ("ABORT", "CONTINUE")


class BuildspecError(ValueError):
    """The buildspec cannot be run; the message names the field."""


@dataclass(frozen=True)
class Phase:
    """One of install / pre_build / build / post_build."""

    name: str
    commands: tuple[str, ...] = ()
    finally_commands: tuple[str, ...] = ()
    on_failure: str = "ABORT"


@dataclass(frozen=True)
class Buildspec:
    """What a build runs."""

    shell: str = "bash"
    variables: dict[str, str] = field(default_factory=dict)
    parameter_store: dict[str, str] = field(default_factory=dict)
    secrets_manager: dict[str, str] = field(default_factory=dict)
    exported_variables: tuple[str, ...] = ()
    phases: dict[str, Phase] = field(default_factory=dict)

    def phase(self, name: str) -> Phase:
        return self.phases.get(name) or Phase(name)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise BuildspecError(f"{where}: expected a string, got {type(value).__name__}")


def _mapping(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BuildspecError(f"{where}: expected a mapping")
    return {str(k): _scalar(v, f"{where}.{k}") for k, v in value.items()}


def _commands(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BuildspecError(f"{where}: expected a list of commands")
    return tuple(_scalar(c, f"{where}[{i}]") for i, c in enumerate(value))


def parse(text: str) -> Buildspec:
    """The buildspec in `text` (YAML, version 0.2)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BuildspecError(f"invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(doc, dict):
        raise BuildspecError("expected a mapping at the top level")
    if str(doc.get("version")) not in ("0.2", "0.2.0"):
        raise BuildspecError(f"version: {doc.get('version')!r} is not supported (use 0.2)")
    env = doc.get("env") or {}
    if not isinstance(env, dict):
        raise BuildspecError("env: expected a mapping")
    shell_name = str(env.get("shell", "bash"))
    if shell_name not in SHELLS:
        raise BuildspecError(f"env.shell: {shell_name!r} is not supported (bash or /bin/sh)")
    exported = env.get("exported-variables") or []
    if not isinstance(exported, list):
        raise BuildspecError("env.exported-variables: expected a list of names")
    phases_doc = doc.get("phases") or {}
    if not isinstance(phases_doc, dict):
        raise BuildspecError("phases: expected a mapping")
    unknown = sorted(set(phases_doc) - set(PHASES))
    if unknown:
        raise BuildspecError(f"phases: unknown phase {unknown[0]!r}")
    phases: dict[str, Phase] = {}
    for name, body in phases_doc.items():
        body = body or {}
        if not isinstance(body, dict):
            raise BuildspecError(f"phases.{name}: expected a mapping")
        on_failure = str(body.get("on-failure", "ABORT")).upper()
        if on_failure not in ON_FAILURE:
            raise BuildspecError(f"phases.{name}.on-failure: {on_failure!r} (ABORT or CONTINUE)")
        phases[name] = Phase(
            name,
            _commands(body.get("commands"), f"phases.{name}.commands"),
            _commands(body.get("finally"), f"phases.{name}.finally"),
            on_failure,
        )
    return Buildspec(
        shell=SHELLS[shell_name],
        variables=_mapping(env.get("variables"), "env.variables"),
        parameter_store=_mapping(env.get("parameter-store"), "env.parameter-store"),
        secrets_manager=_mapping(env.get("secrets-manager"), "env.secrets-manager"),
        exported_variables=tuple(str(v) for v in exported),
        phases=phases,
    )
