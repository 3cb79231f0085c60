"""ApiVersions (18): the API table this broker serves, straight from its router.

From v3 the request names the client software; Kafka rejects names and versions outside
`[a-zA-Z0-9](?:[a-zA-Z0-9\\-.]*[a-zA-Z0-9])?` with INVALID_REQUEST, and so do we. No
features are advertised (SupportedFeatures empty, FinalizedFeaturesEpoch -1). Versions the
router does not advertise never reach this handler: the connection answers them in the v0
layout with UNSUPPORTED_VERSION.
"""

from __future__ import annotations

import re

from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

_SOFTWARE_PATTERN = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


async def handle(ctx: RequestContext, request: Message) -> Message:
    if ctx.api_version >= 3 and not (
        _SOFTWARE_PATTERN.fullmatch(request["client_software_name"])
        and _SOFTWARE_PATTERN.fullmatch(request["client_software_version"])
    ):
        return {"error_code": int(ErrorCode.INVALID_REQUEST), "api_keys": []}
    return {
        "error_code": int(ErrorCode.NONE),
        "api_keys": ctx.router.api_versions(),
        "throttle_time_ms": 0,
    }
