"""Tests of `build_assets/cli/`."""
