"""build-assets: content-addressed Docker / Lambda image builds as Dagster assets."""

__version__ = "0.1.0"
