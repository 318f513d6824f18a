"""Tests of `build_assets/engine/`."""
