"""Tests of `build_assets/dagster/`."""
