"""Plugins every test directory may use: `start_target` (the client's integration targets);
`--run-slow` also runs the soak tests marked `slow`."""

import pytest

pytest_plugins = ["tests.integration.client_support"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the soak tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="a soak run: only with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
