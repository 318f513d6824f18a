"""How each Lambda function of the manifest is deployed, and where built images are published.

A `lambda:` item is a function name (`deploy: direct`, no alias: build-assets updates
`$LATEST`, as always) or a mapping `{name, alias, deploy}` (`core.model.FunctionEntry`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from build_assets.core.model import DEFAULT_SSM

DIRECT, NONE = "direct", "none"
DeployMode = Literal["direct", "none"]
# what Lambda's CreateAlias accepts: 1-128 of [A-Za-z0-9_-], not all digits (that is a version)
ALIAS_RE = re.compile(r"^(?!\d+$)[A-Za-z0-9_-]{1,128}$")
# what SSM's PutParameter accepts as a name (a path: '/' first, at most 15 levels)
SSM_NAME_RE = re.compile(r"^/[A-Za-z0-9_.\-/]{1,1010}$")
SSM_MAX_LEVELS = 15


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function of an image: its name, alias (if any) and who deploys it."""

    name: str
    image: str
    alias: str | None = None
    deploy: DeployMode = DIRECT

    @property
    def qualifier(self) -> str | None:
        """What the drift check reads: the alias when there is one, else `$LATEST`."""
        return self.alias

    @property
    def owned_by_infrastructure(self) -> bool:
        return self.deploy == NONE


def entry_name(entry: Any) -> str:
    """The function name of a `lambda:` item (a name, a mapping or a model)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        return str(entry.get("name", ""))
    return str(getattr(entry, "name", ""))


def spec_of(entry: Any, image: str) -> FunctionSpec:
    """The FunctionSpec of one `lambda:` item of image `image`."""
    if isinstance(entry, str):
        return FunctionSpec(entry, image)
    get = entry.get if isinstance(entry, Mapping) else lambda k, d=None: getattr(entry, k, d)
    return FunctionSpec(
        str(get("name", "")), image, get("alias", None), get("deploy", DIRECT) or DIRECT
    )


def function_specs(manifest: Any) -> dict[str, FunctionSpec]:
    """Function name -> FunctionSpec, over every image of a (validated or frozen) manifest."""
    out: dict[str, FunctionSpec] = {}
    for image, spec in manifest.images.items():
        for entry in spec.lambda_entries:
            fs = spec_of(entry, image)
            out.setdefault(fs.name, fs)
    return out


def specs_for(manifest: Any, names: Iterable[str]) -> dict[str, FunctionSpec]:
    """The FunctionSpecs of `names` (a name not in the manifest: a plain direct function)."""
    known = function_specs(manifest)
    return {n: known.get(n, FunctionSpec(n, "")) for n in names}


def ssm_template(manifest: Any) -> str | None:
    """The manifest's `publish.ssm` template (None: publishing is off)."""
    publish = getattr(manifest, "publish", None)
    value = publish.get("ssm") if isinstance(publish, Mapping) else getattr(publish, "ssm", None)
    if value is False:
        return None
    return value or DEFAULT_SSM


def ssm_name(template: str, env: str, image: str) -> str:
    return template.format(env=env, image=image)


def ssm_name_problem(template: str) -> str | None:
    """Why SSM would refuse the names `template` gives (None: it would not)."""
    try:
        name = ssm_name(template, "dev", "some-image")
    except (KeyError, IndexError, ValueError) as exc:
        return f"bad template {template!r} (placeholders: {{image}}, {{env}}; {exc})"
    if "{image}" not in template:
        return f"{template!r} must contain {{image}} (each image needs its own parameter)"
    if not SSM_NAME_RE.match(name) or "//" in name or name.endswith("/"):
        return (
            f"parameter name {name!r} is not one SSM accepts ('/' first, then letters, digits,"
            " '_', '.', '-', '/')"
        )
    if name.count("/") > SSM_MAX_LEVELS:
        return f"parameter name {name!r} has more than {SSM_MAX_LEVELS} levels"
    if name.lower().startswith(("/aws", "/ssm")):
        return f"parameter name {name!r} starts with a prefix AWS reserves (aws, ssm)"
    return None
