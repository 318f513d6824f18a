"""Tests of `build_assets/core/`."""
