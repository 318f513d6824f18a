"""The Dagster code location: `defs` for `dagster dev` / `dagster asset materialize -m`.

Loaded from the environment (BUILD_ASSETS_REPO, BUILD_ASSETS_MANIFEST, BUILD_ASSETS_REF, ...);
importing this module computes every image version once. Use `build_assets.dagster.location`
to build definitions for another monorepo from Python without touching the environment.
"""

from build_assets.dagster.location import build_definitions

defs = build_definitions()
