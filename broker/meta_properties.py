"""A data dir's identity: Kafka's `meta.properties` ("version=1", "cluster.id=...",
"node.id=..."), written on first start and checked on every later one, so a node never
serves another node's or another cluster's data.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import random

from tidelog.broker.config import BrokerConfig
from tidelog.storage.checkpoint import read_file_if_exists, write_atomic
from tidelog.storage.filesystem import FileSystem

META_PROPERTIES = "meta.properties"
META_PROPERTIES_VERSION = 1


class MetadataStoreError(Exception):
    """The data dir's metadata is unreadable or belongs to another node or cluster."""


def random_cluster_id(rng: random.Random) -> str:
    """Kafka's cluster id format: 16 random bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode("ascii")


def voters_cluster_id(voters: str) -> str:
    """The cluster id of a quorum configured without one: derived from the voter list
    (`controller_quorum_voters`, whitespace ignored), so every node given the same voters
    agrees on it without a formatting step. Same form as Kafka's ids (16 bytes, base64url)."""
    canonical = ",".join(part.strip() for part in voters.split(",") if part.strip())
    digest = hashlib.sha256(b"tidelog-cluster:" + canonical.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def configured_cluster_id(config: BrokerConfig) -> str | None:
    """The cluster id this node must belong to, if its config decides one: `cluster_id`,
    else the voters' id when the quorum has several voters; None for a quorum of one."""
    if config.cluster_id is not None:
        return config.cluster_id
    if len(config.voter_ids) > 1:
        return voters_cluster_id(config.controller_quorum_voters)
    return None


def load_cluster_identity(
    fs: FileSystem, data_dir: str, config: BrokerConfig, rng: random.Random
) -> str:
    """Ensure `data_dir` exists and carries meta.properties for this node; return the
    cluster id. The first start writes the file (with the configured id, see
    `configured_cluster_id`, or a new random one); later starts refuse a data dir of another
    node or cluster."""
    ensure_dir(fs, data_dir)
    path = posixpath.join(data_dir, META_PROPERTIES)
    data = read_file_if_exists(fs, path)
    configured = configured_cluster_id(config)
    if data is None:
        cluster_id = configured or random_cluster_id(rng)
        body = (
            f"version={META_PROPERTIES_VERSION}\ncluster.id={cluster_id}\n"
            f"node.id={config.node_id}\n"
        )
        write_atomic(fs, path, body.encode())
        return cluster_id
    properties = _parse_properties(path, data)
    stored_node = properties.get("node.id")
    stored_cluster = properties.get("cluster.id")
    if stored_cluster is None or stored_node is None:
        raise MetadataStoreError(f"{path}: cluster.id and node.id are required")
    if stored_node != str(config.node_id):
        raise MetadataStoreError(
            f"{path}: data dir belongs to node {stored_node}, this is node {config.node_id}"
        )
    if configured is not None and configured != stored_cluster:
        raise MetadataStoreError(
            f"{path}: data dir belongs to cluster {stored_cluster}, this node's cluster is "
            f"{configured} (set cluster_id, or use this data dir's cluster's voters)"
        )
    return stored_cluster


def _parse_properties(path: str, data: bytes) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataStoreError(f"{path}: not UTF-8: {exc}") from None
    properties = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise MetadataStoreError(f"{path}: line {line!r} is not key=value")
        properties[key.strip()] = value.strip()
    return properties


def ensure_dir(fs: FileSystem, path: str) -> None:
    if fs.is_dir(path):
        return
    parent = posixpath.dirname(path.rstrip("/"))
    if parent and parent != path and not fs.exists(parent):
        ensure_dir(fs, parent)
    fs.mkdir(path)
    if parent:
        fs.fsync_dir(parent)
