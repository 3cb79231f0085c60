"""Which APIs the broker serves, at which versions, and by which handler.

A `Route` binds one API key to the versions advertised in ApiVersions and an async handler:

    async def handle(ctx: RequestContext, request: Message) -> Message | None

`request` is the decoded body (a dict with snake_case keys, every field of the schema
present); the handler returns the response body for `ctx.api_version`, or None to send no
response at all (Produce with acks=0). Responses may carry `Splice` values (log file
ranges) in `records` fields; the connection sends those with sendfile where it can.

A handler reports errors the client must act on inside its response (error codes). A
handler that must drop the client instead (an acks=0 Produce that fails, as Kafka does)
raises `CloseConnection`: responses to earlier requests still go out, then the connection
closes. Any other exception escaping a handler is a broker bug: the connection logs it and
answers with `error_response(request, version, UNKNOWN_SERVER_ERROR)`, or closes the
connection when the route has no way to build one.

`served` may be narrower than `advertised`: Kafka clients check exact versions inside the
advertised range, so an API can advertise old versions that it then answers with
UNSUPPORTED_VERSION (through `error_response`). Advertised versions older than the schema
knows (Produce 0-2, which librdkafka before 2.11.1 looks for before it compresses with gzip
or snappy) cannot be parsed: a request at such a version closes the connection, as Kafka 4
does. No client sends one while a newer version is advertised. An API that has no route is
never advertised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tidelog.broker.groups.service import GroupService, GroupServiceHost
from tidelog.broker.producer_ids import ProducerIdAllocator
from tidelog.broker.runner import BlockingRunner
from tidelog.client.protocol.apis import API_BY_KEY, RequestHeader
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Api, Message, Versions

if TYPE_CHECKING:
    from tidelog.broker.controller.channel import ControllerChannel
    from tidelog.broker.controller.controller import QuorumController
    from tidelog.broker.controller.quorum import MetadataQuorum
    from tidelog.broker.isr import IsrManager
    from tidelog.broker.lifecycle import BrokerLifecycle
    from tidelog.broker.network import PeerInfo


class CloseConnection(Exception):
    """Raised by a handler: answer nothing and close the connection (see module docstring)."""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The connection a request arrived on."""

    connection_id: str
    """Unique within the broker process: "<listener>-<local host:port>-<peer host:port>-<n>"."""
    listener_name: str
    peer: PeerInfo


class BrokerContext(GroupServiceHost, Protocol):
    """What handlers may use of their broker: a narrow view the `Broker` satisfies, so that
    handlers and connections never import `broker.server`. It extends what the group
    service uses (config, the metadata image, topics, replicas, randomness, wall clock)."""

    @property
    def groups(self) -> GroupService: ...

    @property
    def producer_ids(self) -> ProducerIdAllocator: ...

    @property
    def quorum(self) -> MetadataQuorum:
        """This node's member of the controller quorum (the metadata it has applied)."""
        ...

    @property
    def controller(self) -> QuorumController | None:
        """The controller of a controller node (active while its quorum member leads)."""
        ...

    @property
    def channel(self) -> ControllerChannel:
        """Requests to the active controller when it is another node."""
        ...

    @property
    def lifecycle(self) -> BrokerLifecycle: ...

    @property
    def isr(self) -> IsrManager:
        """The leader's side of the ISR (proposes changes to the controller)."""
        ...

    @property
    def run_blocking(self) -> BlockingRunner:
        """Runs blocking work (fsync) off the event loop."""
        ...

    @property
    def connection_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything a handler knows besides the request body."""

    header: RequestHeader
    connection: ConnectionInfo
    broker: BrokerContext
    router: Router
    """The APIs served on this connection's listener (ApiVersions lists them)."""

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def correlation_id(self) -> int:
        return self.header.correlation_id

    @property
    def client_id(self) -> str | None:
        return self.header.client_id


Handler = Callable[[RequestContext, Message], Awaitable[Message | None]]
ErrorResponse = Callable[[Message, int, ErrorCode], Message]
"""(decoded request, version, error code) -> a response body carrying that error everywhere."""


def top_level_error_response(api: Api) -> ErrorResponse | None:
    """An `ErrorResponse` for an API whose response has a top-level ErrorCode in every version
    (ApiVersions, FindCoordinator, JoinGroup...), else None."""
    field = next((f for f in api.response if f.name == "error_code"), None)
    if field is None or field.versions.lowest > api.valid.lowest:
        return None

    def build(request: Message, version: int, code: ErrorCode) -> Message:
        return {"error_code": int(code)}

    return build


@dataclass(frozen=True)
class Route:
    api: Api
    advertised: Versions
    served: Versions
    handler: Handler
    error_response: ErrorResponse | None

    @property
    def key(self) -> int:
        return self.api.key


def route(
    api_key: int,
    advertised: str,
    handler: Handler,
    *,
    served: str | None = None,
    error_response: ErrorResponse | None = None,
) -> Route:
    """Declare a route: `advertised`/`served` in Kafka's notation ("0-8"); `served` defaults
    to `advertised`; `error_response` defaults to a top-level ErrorCode if the schema has one.
    """
    api = API_BY_KEY[api_key]
    advertised_versions = Versions.parse(advertised)
    served_versions = Versions.parse(served) if served is not None else advertised_versions
    if advertised_versions.empty or advertised_versions.highest > api.valid.highest:
        raise ValueError(f"{api.name}: advertised {advertised} is above the schema's versions")
    if served_versions.empty or not (
        advertised_versions.lowest <= served_versions.lowest
        and served_versions.highest <= advertised_versions.highest
    ):
        raise ValueError(f"{api.name}: served {served} is not within advertised {advertised}")
    if served_versions.lowest < api.valid.lowest:
        raise ValueError(f"{api.name}: served {served} is below the schema's versions")
    if served_versions != advertised_versions and error_response is None:
        error_response = top_level_error_response(api)
        if error_response is None:
            raise ValueError(f"{api.name}: unserved versions need an error_response")
    return Route(
        api=api,
        advertised=advertised_versions,
        served=served_versions,
        handler=handler,
        error_response=error_response or top_level_error_response(api),
    )


class Router:
    """The API table: route lookup by key and the ApiVersions answer."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes: dict[int, Route] = {}
        for r in routes:
            if r.key in self._routes:
                raise ValueError(f"two routes for API key {r.key} ({r.api.name})")
            self._routes[r.key] = r

    def get(self, api_key: int) -> Route | None:
        return self._routes.get(api_key)

    def __contains__(self, api_key: object) -> bool:
        return api_key in self._routes

    def api_versions(self) -> list[Message]:
        """ApiVersions' `api_keys`: every routed API with its advertised range, by key."""
        return [
            {
                "api_key": key,
                "min_version": r.advertised.lowest,
                "max_version": r.advertised.highest,
            }
            for key, r in sorted(self._routes.items())
        ]
