"""Consumer-group APIs: OffsetCommit (8), OffsetFetch (9), FindCoordinator (10), JoinGroup (11),
Heartbeat (12), LeaveGroup (13), SyncGroup (14), DescribeGroups (15), ListGroups (16),
DeleteGroups (42), OffsetDelete (47).

Transcribed from Kafka's message definitions: each API's validVersions and first flexible
version, and every field's versions, nullableVersions, tag and non-zero default.
tests/protocol/test_schema_agreement.py checks them against the JSON at every version.
Versions that Kafka 4 no longer accepts (OffsetCommit 0-1, OffsetFetch 0) are absent.
"""

from tidelog.client.protocol.schema import Api, F, Versions

OFFSET_COMMIT = Api(
    key=8,
    name="OffsetCommit",
    valid=Versions.parse("2-10"),
    flexible=8,
    request=(
        F("GroupId", "string"),
        F("GenerationIdOrMemberEpoch", "int32", "1+", default=-1),
        F("MemberId", "string", "1+"),
        F("GroupInstanceId", "string", "7+", nullable="7+", default=None),
        F("RetentionTimeMs", "int64", "2-4", default=-1),
        F("Topics", "[]OffsetCommitRequestTopic", fields=(
            F("Name", "string", "0-9"),
            F("TopicId", "uuid", "10+"),
            F("Partitions", "[]OffsetCommitRequestPartition", fields=(
                F("PartitionIndex", "int32"),
                F("CommittedOffset", "int64"),
                F("CommittedLeaderEpoch", "int32", "6+", default=-1),
                F("CommitTimestamp", "int64", "1", default=-1),
                F("CommittedMetadata", "string", nullable="0+"),
            )),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "3+"),
        F("Topics", "[]OffsetCommitResponseTopic", fields=(
            F("Name", "string", "0-9"),
            F("TopicId", "uuid", "10+"),
            F("Partitions", "[]OffsetCommitResponsePartition", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
            )),
        )),
    ),
)  # fmt: skip


OFFSET_FETCH = Api(
    key=9,
    name="OffsetFetch",
    valid=Versions.parse("1-10"),
    flexible=6,
    request=(
        F("GroupId", "string", "0-7"),
        F("Topics", "[]OffsetFetchRequestTopic", "0-7", nullable="2-7", fields=(
            F("Name", "string", "0-7"),
            F("PartitionIndexes", "[]int32", "0-7"),
        )),
        F("Groups", "[]OffsetFetchRequestGroup", "8+", fields=(
            F("GroupId", "string", "8+"),
            F("MemberId", "string", "9+", nullable="9+", default=None),
            F("MemberEpoch", "int32", "9+", default=-1),
            F("Topics", "[]OffsetFetchRequestTopics", "8+", nullable="8+", fields=(
                F("Name", "string", "8-9"),
                F("TopicId", "uuid", "10+"),
                F("PartitionIndexes", "[]int32", "8+"),
            )),
        )),
        F("RequireStable", "bool", "7+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "3+"),
        F("Topics", "[]OffsetFetchResponseTopic", "0-7", fields=(
            F("Name", "string", "0-7"),
            F("Partitions", "[]OffsetFetchResponsePartition", "0-7", fields=(
                F("PartitionIndex", "int32", "0-7"),
                F("CommittedOffset", "int64", "0-7"),
                F("CommittedLeaderEpoch", "int32", "5-7", default=-1),
                F("Metadata", "string", "0-7", nullable="0-7"),
                F("ErrorCode", "int16", "0-7"),
            )),
        )),
        F("ErrorCode", "int16", "2-7"),
        F("Groups", "[]OffsetFetchResponseGroup", "8+", fields=(
            F("GroupId", "string", "8+"),
            F("Topics", "[]OffsetFetchResponseTopics", "8+", fields=(
                F("Name", "string", "8-9"),
                F("TopicId", "uuid", "10+"),
                F("Partitions", "[]OffsetFetchResponsePartitions", "8+", fields=(
                    F("PartitionIndex", "int32", "8+"),
                    F("CommittedOffset", "int64", "8+"),
                    F("CommittedLeaderEpoch", "int32", "8+", default=-1),
                    F("Metadata", "string", "8+", nullable="8+"),
                    F("ErrorCode", "int16", "8+"),
                )),
            )),
            F("ErrorCode", "int16", "8+"),
        )),
    ),
)  # fmt: skip


FIND_COORDINATOR = Api(
    key=10,
    name="FindCoordinator",
    valid=Versions.parse("0-6"),
    flexible=3,
    request=(
        F("Key", "string", "0-3"),
        F("KeyType", "int8", "1+"),
        F("CoordinatorKeys", "[]string", "4+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("ErrorCode", "int16", "0-3"),
        F("ErrorMessage", "string", "1-3", nullable="1-3"),
        F("NodeId", "int32", "0-3"),
        F("Host", "string", "0-3"),
        F("Port", "int32", "0-3"),
        F("Coordinators", "[]Coordinator", "4+", fields=(
            F("Key", "string", "4+"),
            F("NodeId", "int32", "4+"),
            F("Host", "string", "4+"),
            F("Port", "int32", "4+"),
            F("ErrorCode", "int16", "4+"),
            F("ErrorMessage", "string", "4+", nullable="4+"),
        )),
    ),
)  # fmt: skip


JOIN_GROUP = Api(
    key=11,
    name="JoinGroup",
    valid=Versions.parse("0-9"),
    flexible=6,
    request=(
        F("GroupId", "string"),
        F("SessionTimeoutMs", "int32"),
        F("RebalanceTimeoutMs", "int32", "1+", default=-1),
        F("MemberId", "string"),
        F("GroupInstanceId", "string", "5+", nullable="5+", default=None),
        F("ProtocolType", "string"),
        F("Protocols", "[]JoinGroupRequestProtocol", fields=(
            F("Name", "string"),
            F("Metadata", "bytes"),
        )),
        F("Reason", "string", "8+", nullable="8+", default=None),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "2+"),
        F("ErrorCode", "int16"),
        F("GenerationId", "int32", default=-1),
        F("ProtocolType", "string", "7+", nullable="7+", default=None),
        F("ProtocolName", "string", nullable="7+"),
        F("Leader", "string"),
        F("SkipAssignment", "bool", "9+"),
        F("MemberId", "string"),
        F("Members", "[]JoinGroupResponseMember", fields=(
            F("MemberId", "string"),
            F("GroupInstanceId", "string", "5+", nullable="5+", default=None),
            F("Metadata", "bytes"),
        )),
    ),
)  # fmt: skip


HEARTBEAT = Api(
    key=12,
    name="Heartbeat",
    valid=Versions.parse("0-4"),
    flexible=4,
    request=(
        F("GroupId", "string"),
        F("GenerationId", "int32"),
        F("MemberId", "string"),
        F("GroupInstanceId", "string", "3+", nullable="3+", default=None),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("ErrorCode", "int16"),
    ),
)  # fmt: skip


LEAVE_GROUP = Api(
    key=13,
    name="LeaveGroup",
    valid=Versions.parse("0-5"),
    flexible=4,
    request=(
        F("GroupId", "string"),
        F("MemberId", "string", "0-2"),
        F("Members", "[]MemberIdentity", "3+", fields=(
            F("MemberId", "string", "3+"),
            F("GroupInstanceId", "string", "3+", nullable="3+", default=None),
            F("Reason", "string", "5+", nullable="5+", default=None),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("ErrorCode", "int16"),
        F("Members", "[]MemberResponse", "3+", fields=(
            F("MemberId", "string", "3+"),
            F("GroupInstanceId", "string", "3+", nullable="3+"),
            F("ErrorCode", "int16", "3+"),
        )),
    ),
)  # fmt: skip


SYNC_GROUP = Api(
    key=14,
    name="SyncGroup",
    valid=Versions.parse("0-5"),
    flexible=4,
    request=(
        F("GroupId", "string"),
        F("GenerationId", "int32"),
        F("MemberId", "string"),
        F("GroupInstanceId", "string", "3+", nullable="3+", default=None),
        F("ProtocolType", "string", "5+", nullable="5+", default=None),
        F("ProtocolName", "string", "5+", nullable="5+", default=None),
        F("Assignments", "[]SyncGroupRequestAssignment", fields=(
            F("MemberId", "string"),
            F("Assignment", "bytes"),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("ErrorCode", "int16"),
        F("ProtocolType", "string", "5+", nullable="5+", default=None),
        F("ProtocolName", "string", "5+", nullable="5+", default=None),
        F("Assignment", "bytes"),
    ),
)  # fmt: skip


DESCRIBE_GROUPS = Api(
    key=15,
    name="DescribeGroups",
    valid=Versions.parse("0-6"),
    flexible=5,
    request=(
        F("Groups", "[]string"),
        F("IncludeAuthorizedOperations", "bool", "3+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("Groups", "[]DescribedGroup", fields=(
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", "6+", nullable="6+", default=None),
            F("GroupId", "string"),
            F("GroupState", "string"),
            F("ProtocolType", "string"),
            F("ProtocolData", "string"),
            F("Members", "[]DescribedGroupMember", fields=(
                F("MemberId", "string"),
                F("GroupInstanceId", "string", "4+", nullable="4+", default=None),
                F("ClientId", "string"),
                F("ClientHost", "string"),
                F("MemberMetadata", "bytes"),
                F("MemberAssignment", "bytes"),
            )),
            F("AuthorizedOperations", "int32", "3+", default=-2147483648),
        )),
    ),
)  # fmt: skip


LIST_GROUPS = Api(
    key=16,
    name="ListGroups",
    valid=Versions.parse("0-5"),
    flexible=3,
    request=(
        F("StatesFilter", "[]string", "4+"),
        F("TypesFilter", "[]string", "5+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("ErrorCode", "int16"),
        F("Groups", "[]ListedGroup", fields=(
            F("GroupId", "string"),
            F("ProtocolType", "string"),
            F("GroupState", "string", "4+"),
            F("GroupType", "string", "5+"),
        )),
    ),
)  # fmt: skip


DELETE_GROUPS = Api(
    key=42,
    name="DeleteGroups",
    valid=Versions.parse("0-2"),
    flexible=2,
    request=(
        F("GroupsNames", "[]string"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("Results", "[]DeletableGroupResult", fields=(
            F("GroupId", "string"),
            F("ErrorCode", "int16"),
        )),
    ),
)  # fmt: skip


OFFSET_DELETE = Api(
    key=47,
    name="OffsetDelete",
    valid=Versions.parse("0"),
    flexible=None,
    request=(
        F("GroupId", "string"),
        F("Topics", "[]OffsetDeleteRequestTopic", fields=(
            F("Name", "string"),
            F("Partitions", "[]OffsetDeleteRequestPartition", fields=(
                F("PartitionIndex", "int32"),
            )),
        )),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("ThrottleTimeMs", "int32"),
        F("Topics", "[]OffsetDeleteResponseTopic", fields=(
            F("Name", "string"),
            F("Partitions", "[]OffsetDeleteResponsePartition", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
            )),
        )),
    ),
)  # fmt: skip


APIS: tuple[Api, ...] = (
    OFFSET_COMMIT,
    OFFSET_FETCH,
    FIND_COORDINATOR,
    JOIN_GROUP,
    HEARTBEAT,
    LEAVE_GROUP,
    SYNC_GROUP,
    DESCRIBE_GROUPS,
    LIST_GROUPS,
    DELETE_GROUPS,
    OFFSET_DELETE,
)
