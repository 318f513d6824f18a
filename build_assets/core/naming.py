"""Names of an image's AWS resources: the manifest's templates (placeholders `{image}`, `{env}`).

Kept free of pydantic so that `plan`'s fast paths, which read the manifest document without
building the validated model, name repositories exactly as `Manifest.repository_name` does.
"""

from __future__ import annotations

DEFAULT_PROJECT_NAME = "{image}-{env}-img-builder"
DEFAULT_REPOSITORY_NAME = "{image}"


def repository_name_in(doc: object, name: str, env: str = "") -> str:
    """The repository of image `name`, from a manifest document that passed validation."""
    doc = doc if isinstance(doc, dict) else {}
    spec = (doc.get("images") or {}).get(name) or {}
    template = (
        spec.get("repository")
        or (doc.get("naming") or {}).get("repository")
        or DEFAULT_REPOSITORY_NAME
    )
    return template.format(image=name, env=env)
