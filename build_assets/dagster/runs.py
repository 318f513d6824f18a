"""What a submitted run is and where it is shown: the names of the code location's job and
repository, the webserver's address and a run's page. Shared by the submission through the
webserver (`dagster.submit`) and the one through the instance (`dagster.internals`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from build_assets.errors import UserError
from build_assets.settings import ENVIRONMENT

ENV_WEBSERVER = ENVIRONMENT["webserver"][0]
ENV_LOCATION = ENVIRONMENT["location_name"][0]
DEFAULT_WEBSERVER = "127.0.0.1:3000"
DEFAULT_LOCATION = "build_assets"
DEFAULT_MODULE = "build_assets.definitions"
ASSET_JOB = "__ASSET_JOB"
REPOSITORY = "__repository__"


class SubmittedRun(NamedTuple):
    """A queued run: unpacks as `run_id, url`."""

    run_id: str
    url: str


def webserver_address(address: str | None = None) -> tuple[str, int]:
    """(host, port) of the Dagster webserver (setting `webserver`, default 127.0.0.1:3000)."""
    address = address or DEFAULT_WEBSERVER
    host, _, port = address.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise UserError(f"{ENV_WEBSERVER}: expected host:port, got '{address}'") from None


def run_url(run_id: str, address: str | None = None) -> str:
    """The run's page in the UI (setting `webserver`, default http://127.0.0.1:3000)."""
    host, port = webserver_address(address)
    return f"http://{host}:{port}/runs/{run_id}"


def asset_paths(asset_keys: Iterable[Any]) -> list[list[str]]:
    """Asset keys as paths: AssetKey objects or sequences of strings."""
    return [list(getattr(k, "path", k)) for k in asset_keys]
