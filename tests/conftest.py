"""Shared pytest set-up: fixtures live in tests/fixtures as plugins."""

pytest_plugins = [
    "tests.fixtures.store",
    "tests.fixtures.gateway",
    "tests.fixtures.oidc",
    "tests.fixtures.postgres_gateway",
]
