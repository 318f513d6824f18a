"""Tests of `build_assets/aws/`."""
