"""The broker's API table: one `route(...)` line per API, with the versions it advertises.

Only APIs listed here are advertised in ApiVersions, so never add a route without a handler.
The ranges follow what the real clients need (see NOTES.md): ApiVersions 0-3 (librdkafka
sends 3, kafka-python tries 4 and falls back on UNSUPPORTED_VERSION).
"""

from __future__ import annotations

from broker.handlers import api_versions, metadata
from broker.router import Route, route

ROUTES: tuple[Route, ...] = (
    route(18, "0-3", api_versions.handle),
    route(3, "0-12", metadata.handle, error_response=metadata.error_response),
)
