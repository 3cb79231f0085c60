"""KRaft quorum APIs: Vote (52), BeginQuorumEpoch (53), EndQuorumEpoch (54),
DescribeQuorum (55), FetchSnapshot (59).

Transcribed from Kafka's message definitions: each API's validVersions and first flexible
version, and every field's versions, nullableVersions, tag and non-zero default.
tests/protocol/test_schema_agreement.py checks them against the JSON at every version
(DescribeQuorum against kafka-python's copy, the others against tests/protocol/kafka_definitions).
The broker neither routes nor advertises these APIs: only `broker.handlers.ROUTES` does that.
"""

from tidelog.client.protocol.schema import Api, F, Versions

# The leader endpoints of KIP-853, tagged in responses, listed in BeginQuorumEpoch and
# EndQuorumEpoch requests.
_NODE_ENDPOINTS_V1 = F("NodeEndpoints", "[]NodeEndpoint", "1+", tag=0, fields=(
    F("NodeId", "int32", "1+"),
    F("Host", "string", "1+"),
    F("Port", "uint16", "1+"),
))  # fmt: skip

_LEADER_ENDPOINTS_V1 = F("LeaderEndpoints", "[]LeaderEndpoint", "1+", fields=(
    F("Name", "string", "1+"),
    F("Host", "string", "1+"),
    F("Port", "uint16", "1+"),
))  # fmt: skip


VOTE = Api(
    key=52,
    name="Vote",
    valid=Versions.parse("0-2"),
    flexible=0,
    request=(
        F("ClusterId", "string", nullable="0+", default=None),
        F("VoterId", "int32", "1+", default=-1),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ReplicaEpoch", "int32"),
                F("ReplicaId", "int32"),
                F("ReplicaDirectoryId", "uuid", "1+"),
                F("VoterDirectoryId", "uuid", "1+"),
                F("LastOffsetEpoch", "int32"),
                F("LastOffset", "int64"),
                F("PreVote", "bool", "2+"),
            )),
        )),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
                F("VoteGranted", "bool"),
            )),
        )),
        _NODE_ENDPOINTS_V1,
    ),
)  # fmt: skip


BEGIN_QUORUM_EPOCH = Api(
    key=53,
    name="BeginQuorumEpoch",
    valid=Versions.parse("0-1"),
    flexible=1,
    request=(
        F("ClusterId", "string", nullable="0+", default=None),
        F("VoterId", "int32", "1+", default=-1),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("VoterDirectoryId", "uuid", "1+"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
            )),
        )),
        _LEADER_ENDPOINTS_V1,
    ),
    response=(
        F("ErrorCode", "int16"),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
            )),
        )),
        _NODE_ENDPOINTS_V1,
    ),
)  # fmt: skip


END_QUORUM_EPOCH = Api(
    key=54,
    name="EndQuorumEpoch",
    valid=Versions.parse("0-1"),
    flexible=1,
    request=(
        F("ClusterId", "string", nullable="0+", default=None),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
                F("PreferredSuccessors", "[]int32", "0"),
                F("PreferredCandidates", "[]ReplicaInfo", "1+", fields=(
                    F("CandidateId", "int32", "1+"),
                    F("CandidateDirectoryId", "uuid", "1+"),
                )),
            )),
        )),
        _LEADER_ENDPOINTS_V1,
    ),
    response=(
        F("ErrorCode", "int16"),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
            )),
        )),
        _NODE_ENDPOINTS_V1,
    ),
)  # fmt: skip


# DescribeQuorum's commonStruct ReplicaState, for both CurrentVoters and Observers.
_REPLICA_STATE = (
    F("ReplicaId", "int32"),
    F("ReplicaDirectoryId", "uuid", "2+"),
    F("LogEndOffset", "int64"),
    F("LastFetchTimestamp", "int64", "1+", default=-1),
    F("LastCaughtUpTimestamp", "int64", "1+", default=-1),
)  # fmt: skip


DESCRIBE_QUORUM = Api(
    key=55,
    name="DescribeQuorum",
    valid=Versions.parse("0-2"),
    flexible=0,
    request=(
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
            )),
        )),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("ErrorMessage", "string", "2+", nullable="2+"),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("ErrorMessage", "string", "2+", nullable="2+"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
                F("HighWatermark", "int64"),
                F("CurrentVoters", "[]ReplicaState", fields=_REPLICA_STATE),
                F("Observers", "[]ReplicaState", fields=_REPLICA_STATE),
            )),
        )),
        F("Nodes", "[]Node", "2+", fields=(
            F("NodeId", "int32", "2+"),
            F("Listeners", "[]Listener", "2+", fields=(
                F("Name", "string", "2+"),
                F("Host", "string", "2+"),
                F("Port", "uint16", "2+"),
            )),
        )),
    ),
)  # fmt: skip


FETCH_SNAPSHOT = Api(
    key=59,
    name="FetchSnapshot",
    valid=Versions.parse("0-1"),
    flexible=0,
    request=(
        F("ClusterId", "string", nullable="0+", tag=0, default=None),
        F("ReplicaId", "int32", default=-1),
        F("MaxBytes", "int32", default=0x7FFFFFFF),
        F("Topics", "[]TopicSnapshot", fields=(
            F("Name", "string"),
            F("Partitions", "[]PartitionSnapshot", fields=(
                F("Partition", "int32"),
                F("CurrentLeaderEpoch", "int32"),
                F("SnapshotId", "SnapshotId", fields=(
                    F("EndOffset", "int64"),
                    F("Epoch", "int32"),
                )),
                F("Position", "int64"),
                F("ReplicaDirectoryId", "uuid", "1+", tag=0),
            )),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("Topics", "[]TopicSnapshot", fields=(
            F("Name", "string"),
            F("Partitions", "[]PartitionSnapshot", fields=(
                F("Index", "int32"),
                F("ErrorCode", "int16"),
                F("SnapshotId", "SnapshotId", fields=(
                    F("EndOffset", "int64"),
                    F("Epoch", "int32"),
                )),
                F("CurrentLeader", "LeaderIdAndEpoch", tag=0, fields=(
                    F("LeaderId", "int32"),
                    F("LeaderEpoch", "int32"),
                )),
                F("Size", "int64"),
                F("Position", "int64"),
                F("UnalignedRecords", "records"),
            )),
        )),
        _NODE_ENDPOINTS_V1,
    ),
)  # fmt: skip


APIS: tuple[Api, ...] = (
    VOTE,
    BEGIN_QUORUM_EPOCH,
    END_QUORUM_EPOCH,
    DESCRIBE_QUORUM,
    FETCH_SNAPSHOT,
)
