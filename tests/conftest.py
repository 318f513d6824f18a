"""Shared fixtures: the local stack (dockerd + registry + moto) and a moto-only AWS server."""

pytest_plugins = ["tests.stack_plugin", "tests.aws_plugin"]
