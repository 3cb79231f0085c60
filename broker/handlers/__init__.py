"""The broker's API table: one `route(...)` line per API, with the versions it advertises.

Only APIs listed here are advertised in ApiVersions, so never add a route without a handler.
The ranges follow what the real clients need (see NOTES.md): ApiVersions 0-3 (librdkafka
sends 3, kafka-python tries 4 and falls back on UNSUPPORTED_VERSION).
"""

from __future__ import annotations

from broker.handlers import api_versions, fetch, init_producer_id, list_offsets, metadata, produce
from broker.router import Route, route

ROUTES: tuple[Route, ...] = (
    route(0, "3-8", produce.handle, error_response=produce.error_response),
    route(1, "4-12", fetch.handle, error_response=fetch.error_response),
    route(2, "1-5", list_offsets.handle, error_response=list_offsets.error_response),
    route(18, "0-3", api_versions.handle),
    route(3, "0-12", metadata.handle, error_response=metadata.error_response),
    route(22, "0-4", init_producer_id.handle, error_response=init_producer_id.error_response),
)
