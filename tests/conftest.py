"""Plugins every test directory may use: `start_target` (the client's integration targets)."""

pytest_plugins = ["tests.integration.client_support"]
