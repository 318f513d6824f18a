"""Shared fixtures: the local stack (dockerd + registry + moto), a moto-only AWS server and a
PostgreSQL server."""

pytest_plugins = ["tests.stack_plugin", "tests.aws_plugin", "tests.postgres_plugin"]
