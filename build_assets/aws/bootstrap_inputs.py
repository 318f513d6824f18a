"""What `bootstrap` needs from a loaded manifest: the images and their CodeBuild overrides, the
ECR lifecycle numbers, and the functions and SSM parameters of the deployer policy.

Each takes the validated manifest model (`core.manifest.load_manifest`); the caller resolves
the settings and loads it (`cli.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from build_assets.aws.project_settings import OVERRIDE_KEYS


def images_from_manifest(model: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Image names and their overrides: `codebuild:` settings, the platform and the naming
    templates (only where they differ from the defaults)."""
    from build_assets.core.manifest import DEFAULT_PROJECT_NAME, DEFAULT_REPOSITORY_NAME

    overrides: dict[str, dict[str, Any]] = {}
    for name, spec in model.images.items():
        options = getattr(spec, "codebuild", None)
        values: dict[str, Any] = {}
        if options is not None:
            values.update(options if isinstance(options, Mapping) else vars(options))
        values["platform"] = model.platform_of(name)
        project = spec.codebuild_project or model.naming.codebuild_project
        repository = spec.repository or model.naming.repository
        values["project_name"] = project if project != DEFAULT_PROJECT_NAME else None
        values["repository_name"] = repository if repository != DEFAULT_REPOSITORY_NAME else None
        given = {k: values.get(k) for k in OVERRIDE_KEYS if values.get(k) is not None}
        if given:
            overrides[name] = given
    return list(model.images), overrides


def manifest_lifecycle(model: Any) -> tuple[int, int]:
    """(keep, untagged_days) of the manifest's `lifecycle:` (defaults when absent)."""
    return model.lifecycle.keep, model.lifecycle.untagged_days


def manifest_deploys(model: Any, env: str) -> tuple[list[Any], list[str]]:
    """(the manifest's FunctionSpecs, the SSM parameters its images are published to in `env`)."""
    from build_assets.core.functions import function_specs, ssm_name, ssm_template

    template = ssm_template(model)
    names = [ssm_name(template, env, i) for i in model.images] if template else []
    return list(function_specs(model).values()), names
