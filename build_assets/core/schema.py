"""The schema of `images.yaml` (pydantic): validates a document's fields and types, and
produces the runtime model (`core.model.Manifest`). The checks across fields and images
(names, paths, bases, templates) are `core.manifest`'s.

Each field here has its twin on the model's class; `tests/cli/test_edited_plan.py` checks
that the two agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from build_assets.core.model import (
    DEFAULT_PROJECT_NAME,
    DEFAULT_REPOSITORY_NAME,
    DEFAULT_SSM,
    PLATFORMS,
    ImageSpec,
    Manifest,
    normalise_path,
    stringify_args,
)
from build_assets.core.show import show

MAX_LIST = 1000  # source_paths / build_args / lambda entries of one image


class CodeBuildSchema(BaseModel):
    """Per-image CodeBuild overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compute_type: str | None = None
    timeout_minutes: int | None = Field(default=None, ge=5, le=2160)
    image: str | None = None
    fleet: str | None = None  # reserved-capacity fleet ARN: builds start without provisioning
    docker_server: str | None = None  # compute type of CodeBuild's Docker server capability


Platform = Literal[PLATFORMS]  # type: ignore[valid-type]


class NamingSchema(BaseModel):
    """Templates of AWS resource names; placeholders `{image}` and `{env}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codebuild_project: str = DEFAULT_PROJECT_NAME
    repository: str = DEFAULT_REPOSITORY_NAME


class LifecycleSchema(BaseModel):
    """Registry clean-up: the newest `keep` versions per repository stay; untagged images
    expire after `untagged_days` (ECR lifecycle policy and `build-assets gc`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: int = Field(default=10, ge=1, le=10000)
    untagged_days: int = Field(default=7, ge=1, le=3650)


class FunctionEntrySchema(BaseModel):
    """A `lambda:` item written as a mapping: who deploys the function, through which alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    alias: str | None = None
    deploy: Literal["direct", "none"] = "direct"


def _entry_kind(value: Any) -> str:
    return "mapping" if isinstance(value, dict | FunctionEntrySchema) else "name"


# a `lambda:` item: one validation error for a bad one, whichever form it has
LambdaItem = Annotated[
    Annotated[str, Tag("name")] | Annotated[FunctionEntrySchema, Tag("mapping")],
    Discriminator(_entry_kind),
]


class PublishSchema(BaseModel):
    """Where each built image's digest-pinned URI is published (`ssm: false`: nowhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssm: str | Literal[False] = DEFAULT_SSM


class ImageSchema(BaseModel):
    """One image of the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dockerfile: str
    source_paths: tuple[str, ...] = Field(default=(), max_length=MAX_LIST)
    base: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict, max_length=MAX_LIST)
    # names or FunctionEntrySchema mappings
    lambda_entries: tuple[LambdaItem, ...] = Field(default=(), alias="lambda", max_length=MAX_LIST)
    codebuild: CodeBuildSchema | None = None
    # adoption of an existing monorepo (see README "Bringing an existing monorepo")
    platform: Platform | None = None
    base_arg: str | None = None  # build arg carrying the base (default: the first FROM's)
    dockerignore: str | Literal[False] | None = None  # ignore file in force, or none at all
    codebuild_project: str | None = None  # name override (template allowed)
    repository: str | None = None  # name override (template allowed)
    # context paths (gitignore-style globs) that look like credentials but are meant to ship
    allow_secrets: tuple[str, ...] = Field(default=(), max_length=MAX_LIST)
    # shown in Dagster only (never hashed): asset owners (emails or `team:name`), description
    owners: tuple[str, ...] = Field(default=(), max_length=MAX_LIST)
    description: str | None = None

    @field_validator("dockerfile")
    @classmethod
    def _normalise_dockerfile(cls, v: str) -> str:
        return normalise_path(v)

    @field_validator("source_paths")
    @classmethod
    def _normalise_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_path(p) for p in v)

    @field_validator("lambda_entries", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("build_args", mode="before")
    @classmethod
    def _stringify_args(cls, v: Any) -> Any:
        return stringify_args(v)


class ManifestSchema(BaseModel):
    """All images of a monorepo, in dependency order (bases first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, ImageSchema]
    source: str = "images.yaml"
    platform: Platform | None = None  # default of every image
    dockerignore: str | Literal[False] | None = None  # default of every image
    naming: NamingSchema = Field(default_factory=NamingSchema)
    lifecycle: LifecycleSchema = Field(default_factory=LifecycleSchema)  # never part of a version
    publish: PublishSchema = Field(default_factory=PublishSchema)  # never part of a version


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) if len(str(p)) <= 60 else show(str(p))[1:-1] for p in loc]
    if parts[:1] == ["images"] and len(parts) >= 2:
        rest = ".".join(parts[2:])
        return f"image '{parts[1]}'" + (f", field '{rest}'" if rest else "")
    return "field '" + ".".join(parts) + "'"


def error_lines(source: str, exc: ValidationError) -> list[str]:
    """One line per validation error; inputs are shown shortened (never stringified whole:
    an aliased input can be huge once expanded)."""
    lines = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = tuple(err["loc"])
        if loc[2:3] == ("lambda",) and loc[4:5] in (("name",), ("mapping",)):
            loc = loc[:4] + loc[5:]  # the union's tag ('lambda.0.mapping.deploy')
            err = {**err, "loc": loc}
        where = _field_path(loc)
        if err["type"] == "extra_forbidden":
            key = err["loc"][-1]
            where = _field_path(tuple(err["loc"][:-1]))
            lines.append(f"{source}: {where}: unknown key {show(str(key))}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {where}: required")
        elif err["type"] == "too_long":
            lines.append(f"{source}: {where}: more than {MAX_LIST} entries")
        else:
            lines.append(f"{source}: {where}: {err['msg']} (got {show(err.get('input'))})")
    return lines


def to_model(data: dict, source: str) -> Manifest:
    """The runtime model of a manifest document whose fields pass the schema (raises
    pydantic's ValidationError: `error_lines` says what is wrong)."""
    valid = ManifestSchema.model_validate({**data, "source": source})
    return Manifest.from_document(valid.model_dump(by_alias=True))


def lenient_model(data: dict, source: str) -> tuple[Manifest, set[str]] | None:
    """The valid part of a manifest that failed validation (for reporting every problem):
    the images that pass the schema, and the names of those that do not (kept as stubs, so
    references to them stay quiet)."""
    images = {}
    known = {f.alias or name for name, f in ImageSchema.model_fields.items()}
    for name, entry in data.get("images", {}).items():
        if not isinstance(entry, dict):
            continue
        try:
            valid = ImageSchema.model_validate({k: v for k, v in entry.items() if k in known})
        except ValidationError:
            continue
        images[str(name)] = ImageSpec.from_document(valid.model_dump(by_alias=True))
    if not images:
        return None
    stubs = {n: ImageSpec(dockerfile="-") for n in data["images"] if str(n) not in images}
    return Manifest(images={**images, **stubs}, source=source), set(stubs)
