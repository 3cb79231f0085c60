"""The broker's API table: one `route(...)` line per API, with the versions it advertises.

Only APIs listed here are advertised in ApiVersions, so never add a route without a handler.
The ranges follow what the real clients need: ApiVersions 0-3 (librdkafka
sends 3, kafka-python tries 4 and falls back on UNSUPPORTED_VERSION).
"""

from __future__ import annotations

from tidelog.broker.handlers import (
    api_versions,
    configs,
    delete_records,
    describe_cluster,
    describe_producers,
    elections,
    fetch,
    groups,
    init_producer_id,
    list_offsets,
    metadata,
    offset_for_leader_epoch,
    produce,
    quorum,
    topic_admin,
)
from tidelog.broker.router import Route, route

FORWARDED_ROUTES: tuple[Route, ...] = (
    route(19, "2-7", topic_admin.create_topics,
          error_response=topic_admin.create_topics_error_response),
    route(20, "1-6", topic_admin.delete_topics,
          error_response=topic_admin.delete_topics_error_response),
    route(37, "0-3", topic_admin.create_partitions,
          error_response=topic_admin.create_partitions_error_response),
    route(33, "0-2", configs.alter, error_response=configs.alter_error_response),
    route(44, "0-1", configs.incremental_alter, error_response=configs.alter_error_response),
    route(55, "0-2", quorum.describe_quorum, error_response=quorum.describe_quorum_error_response),
    route(64, "0", quorum.unregister_broker, error_response=quorum.unregister_error_response),
    route(43, "0-2", elections.elect_leaders, error_response=elections.error_response),
)  # fmt: skip
"""What the active controller carries out: served on both kinds of listener (a broker
forwards them to the active controller, see `forwarding`)."""

ROUTES: tuple[Route, ...] = (
    route(0, "0-8", produce.handle, served="3-8", error_response=produce.error_response),
    route(1, "4-12", fetch.handle, error_response=fetch.error_response),
    route(2, "1-5", list_offsets.handle, error_response=list_offsets.error_response),
    route(18, "0-3", api_versions.handle),
    route(3, "0-12", metadata.handle, error_response=metadata.error_response),
    route(22, "0-4", init_producer_id.handle, error_response=init_producer_id.error_response),
    route(32, "1-4", configs.describe, error_response=configs.describe_error_response),
    route(21, "0-2", delete_records.handle, error_response=delete_records.error_response),
    route(23, "2-4", offset_for_leader_epoch.handle,
          error_response=offset_for_leader_epoch.error_response),
    route(60, "0-2", describe_cluster.handle, error_response=describe_cluster.error_response),
    route(61, "0", describe_producers.handle, error_response=describe_producers.error_response),
    route(10, "0-5", groups.find_coordinator),
    route(11, "0-9", groups.join_group),
    route(14, "0-5", groups.sync_group),
    route(12, "0-4", groups.heartbeat),
    route(13, "0-5", groups.leave_group),
    route(8, "2-9", groups.offset_commit),
    route(9, "1-9", groups.offset_fetch),
    route(15, "0-6", groups.describe_groups),
    route(16, "0-5", groups.list_groups),
    route(42, "0-2", groups.delete_groups),
    route(47, "0", groups.offset_delete),
    *FORWARDED_ROUTES,
)  # fmt: skip

CONTROLLER_ROUTES: tuple[Route, ...] = (
    route(18, "0-3", api_versions.handle),
    route(52, "2", quorum.raft),
    route(53, "1", quorum.raft),
    route(54, "1", quorum.raft),
    route(1, "12", quorum.raft),
    route(59, "1", quorum.raft),
    route(62, "0-4", quorum.broker_registration,
          error_response=quorum.registration_error_response),
    route(63, "0-1", quorum.broker_heartbeat, error_response=quorum.heartbeat_error_response),
    route(67, "0", quorum.allocate_producer_ids,
          error_response=quorum.producer_ids_error_response),
    route(56, "2-3", quorum.alter_partition, error_response=quorum.alter_partition_error_response),
    *FORWARDED_ROUTES,
)  # fmt: skip
"""The controller listener's API table: the quorum, the broker lifecycle, and the admin
requests that brokers forward to the active controller."""
