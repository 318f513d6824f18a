"""Tests of `build_assets/stack/`."""
