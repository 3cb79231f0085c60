"""Data-path APIs: Produce (0), Fetch (1), ListOffsets (2), Metadata (3), DeleteRecords (21),
InitProducerId (22), OffsetForLeaderEpoch (23), DescribeCluster (60), DescribeProducers (61).

Transcribed from Kafka's message definitions: each API's validVersions and first flexible
version, and every field's versions, nullableVersions, tag and non-zero default.
tests/protocol/test_schema_agreement.py checks them against the JSON at every version.
Versions that Kafka 4 no longer accepts (Produce 0-2, Fetch 0-3, ListOffsets 0) are absent.
"""

from tidelog.client.protocol.schema import Api, F, Versions

PRODUCE = Api(
    key=0,
    name="Produce",
    valid=Versions.parse("3-13"),
    flexible=9,
    request=(
        F("TransactionalId", "string", "3+", nullable="3+", default=None),
        F("Acks", "int16"),
        F("TimeoutMs", "int32"),
        F("TopicData", "[]TopicProduceData", fields=(
            F("Name", "string", "0-12"),
            F("TopicId", "uuid", "13+"),
            F("PartitionData", "[]PartitionProduceData", fields=(
                F("Index", "int32"),
                F("Records", "records", nullable="0+"),
            )),
        )),
    ),
    response=(
        F("Responses", "[]TopicProduceResponse", fields=(
            F("Name", "string", "0-12"),
            F("TopicId", "uuid", "13+"),
            F("PartitionResponses", "[]PartitionProduceResponse", fields=(
                F("Index", "int32"),
                F("ErrorCode", "int16"),
                F("BaseOffset", "int64"),
                F("LogAppendTimeMs", "int64", "2+", default=-1),
                F("LogStartOffset", "int64", "5+", default=-1),
                F("RecordErrors", "[]BatchIndexAndErrorMessage", "8+", fields=(
                    F("BatchIndex", "int32", "8+"),
                    F("BatchIndexErrorMessage", "string", "8+", nullable="8+", default=None),
                )),
                F("ErrorMessage", "string", "8+", nullable="8+", default=None),
                F("CurrentLeader", "LeaderIdAndEpoch", "10+", tag=0, fields=(
                    F("LeaderId", "int32", "10+", default=-1),
                    F("LeaderEpoch", "int32", "10+", default=-1),
                )),
            )),
        )),
        F("ThrottleTimeMs", "int32", "1+"),
        F("NodeEndpoints", "[]NodeEndpoint", "10+", tag=0, fields=(
            F("NodeId", "int32", "10+"),
            F("Host", "string", "10+"),
            F("Port", "int32", "10+"),
            F("Rack", "string", "10+", nullable="10+", default=None),
        )),
    ),
)  # fmt: skip


FETCH = Api(
    key=1,
    name="Fetch",
    valid=Versions.parse("4-18"),
    flexible=12,
    request=(
        F("ClusterId", "string", "12+", nullable="12+", tag=0, default=None),
        F("ReplicaId", "int32", "0-14", default=-1),
        F("ReplicaState", "ReplicaState", "15+", tag=1, fields=(
            F("ReplicaId", "int32", "15+", default=-1),
            F("ReplicaEpoch", "int64", "15+", default=-1),
        )),
        F("MaxWaitMs", "int32"),
        F("MinBytes", "int32"),
        F("MaxBytes", "int32", "3+", default=0x7FFFFFFF),
        F("IsolationLevel", "int8", "4+"),
        F("SessionId", "int32", "7+"),
        F("SessionEpoch", "int32", "7+", default=-1),
        F("Topics", "[]FetchTopic", fields=(
            F("Topic", "string", "0-12"),
            F("TopicId", "uuid", "13+"),
            F("Partitions", "[]FetchPartition", fields=(
                F("Partition", "int32"),
                F("CurrentLeaderEpoch", "int32", "9+", default=-1),
                F("FetchOffset", "int64"),
                F("LastFetchedEpoch", "int32", "12+", default=-1),
                F("LogStartOffset", "int64", "5+", default=-1),
                F("PartitionMaxBytes", "int32"),
                F("ReplicaDirectoryId", "uuid", "17+", tag=0),
                F("HighWatermark", "int64", "18+", tag=1, default=9223372036854775807),
            )),
        )),
        F("ForgottenTopicsData", "[]ForgottenTopic", "7+", fields=(
            F("Topic", "string", "7-12"),
            F("TopicId", "uuid", "13+"),
            F("Partitions", "[]int32", "7+"),
        )),
        F("RackId", "string", "11+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("ErrorCode", "int16", "7+"),
        F("SessionId", "int32", "7+"),
        F("Responses", "[]FetchableTopicResponse", fields=(
            F("Topic", "string", "0-12"),
            F("TopicId", "uuid", "13+"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("HighWatermark", "int64"),
                F("LastStableOffset", "int64", "4+", default=-1),
                F("LogStartOffset", "int64", "5+", default=-1),
                F("DivergingEpoch", "EpochEndOffset", "12+", tag=0, fields=(
                    F("Epoch", "int32", "12+", default=-1),
                    F("EndOffset", "int64", "12+", default=-1),
                )),
                F("CurrentLeader", "LeaderIdAndEpoch", "12+", tag=1, fields=(
                    F("LeaderId", "int32", "12+", default=-1),
                    F("LeaderEpoch", "int32", "12+", default=-1),
                )),
                F("SnapshotId", "SnapshotId", "12+", tag=2, fields=(
                    F("EndOffset", "int64", default=-1),
                    F("Epoch", "int32", default=-1),
                )),
                F("AbortedTransactions", "[]AbortedTransaction", "4+", nullable="4+", fields=(
                    F("ProducerId", "int64", "4+"),
                    F("FirstOffset", "int64", "4+"),
                )),
                F("PreferredReadReplica", "int32", "11+", default=-1),
                F("Records", "records", nullable="0+"),
            )),
        )),
        F("NodeEndpoints", "[]NodeEndpoint", "16+", tag=0, fields=(
            F("NodeId", "int32", "16+"),
            F("Host", "string", "16+"),
            F("Port", "int32", "16+"),
            F("Rack", "string", "16+", nullable="16+", default=None),
        )),
    ),
)  # fmt: skip


LIST_OFFSETS = Api(
    key=2,
    name="ListOffsets",
    valid=Versions.parse("1-11"),
    flexible=6,
    request=(
        F("ReplicaId", "int32"),
        F("IsolationLevel", "int8", "2+"),
        F("Topics", "[]ListOffsetsTopic", fields=(
            F("Name", "string"),
            F("Partitions", "[]ListOffsetsPartition", fields=(
                F("PartitionIndex", "int32"),
                F("CurrentLeaderEpoch", "int32", "4+", default=-1),
                F("Timestamp", "int64"),
                F("MaxNumOffsets", "int32", "0", default=1),
            )),
        )),
        F("TimeoutMs", "int32", "10+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "2+"),
        F("Topics", "[]ListOffsetsTopicResponse", fields=(
            F("Name", "string"),
            F("Partitions", "[]ListOffsetsPartitionResponse", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("OldStyleOffsets", "[]int64", "0"),
                F("Timestamp", "int64", "1+", default=-1),
                F("Offset", "int64", "1+", default=-1),
                F("LeaderEpoch", "int32", "4+", default=-1),
            )),
        )),
    ),
)  # fmt: skip


METADATA = Api(
    key=3,
    name="Metadata",
    valid=Versions.parse("0-13"),
    flexible=9,
    request=(
        F("Topics", "[]MetadataRequestTopic", nullable="1+", fields=(
            F("TopicId", "uuid", "10+"),
            F("Name", "string", nullable="10+"),
        )),
        F("AllowAutoTopicCreation", "bool", "4+", default=True),
        F("IncludeClusterAuthorizedOperations", "bool", "8-10"),
        F("IncludeTopicAuthorizedOperations", "bool", "8+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "3+"),
        F("Brokers", "[]MetadataResponseBroker", fields=(
            F("NodeId", "int32"),
            F("Host", "string"),
            F("Port", "int32"),
            F("Rack", "string", "1+", nullable="1+", default=None),
        )),
        F("ClusterId", "string", "2+", nullable="2+", default=None),
        F("ControllerId", "int32", "1+", default=-1),
        F("Topics", "[]MetadataResponseTopic", fields=(
            F("ErrorCode", "int16"),
            F("Name", "string", nullable="12+"),
            F("TopicId", "uuid", "10+"),
            F("IsInternal", "bool", "1+"),
            F("Partitions", "[]MetadataResponsePartition", fields=(
                F("ErrorCode", "int16"),
                F("PartitionIndex", "int32"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32", "7+", default=-1),
                F("ReplicaNodes", "[]int32"),
                F("IsrNodes", "[]int32"),
                F("OfflineReplicas", "[]int32", "5+"),
            )),
            F("TopicAuthorizedOperations", "int32", "8+", default=-2147483648),
        )),
        F("ClusterAuthorizedOperations", "int32", "8-10", default=-2147483648),
        F("ErrorCode", "int16", "13+"),
    ),
)  # fmt: skip


DELETE_RECORDS = Api(
    key=21,
    name="DeleteRecords",
    valid=Versions.parse("0-2"),
    flexible=2,
    request=(
        F("Topics", "[]DeleteRecordsTopic", fields=(
            F("Name", "string"),
            F("Partitions", "[]DeleteRecordsPartition", fields=(
                F("PartitionIndex", "int32"),
                F("Offset", "int64"),
            )),
        )),
        F("TimeoutMs", "int32"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("Topics", "[]DeleteRecordsTopicResult", fields=(
            F("Name", "string"),
            F("Partitions", "[]DeleteRecordsPartitionResult", fields=(
                F("PartitionIndex", "int32"),
                F("LowWatermark", "int64"),
                F("ErrorCode", "int16"),
            )),
        )),
    ),
)  # fmt: skip


INIT_PRODUCER_ID = Api(
    key=22,
    name="InitProducerId",
    valid=Versions.parse("0-6"),
    flexible=2,
    request=(
        F("TransactionalId", "string", nullable="0+"),
        F("TransactionTimeoutMs", "int32"),
        F("ProducerId", "int64", "3+", default=-1),
        F("ProducerEpoch", "int16", "3+", default=-1),
        F("Enable2Pc", "bool", "6+"),
        F("KeepPreparedTxn", "bool", "6+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("ProducerId", "int64", default=-1),
        F("ProducerEpoch", "int16"),
        F("OngoingTxnProducerId", "int64", "6+", default=-1),
        F("OngoingTxnProducerEpoch", "int16", "6+", default=-1),
    ),
)  # fmt: skip


OFFSET_FOR_LEADER_EPOCH = Api(
    key=23,
    name="OffsetForLeaderEpoch",
    valid=Versions.parse("2-4"),
    flexible=4,
    request=(
        F("ReplicaId", "int32", "3+", default=-2),
        F("Topics", "[]OffsetForLeaderTopic", fields=(
            F("Topic", "string"),
            F("Partitions", "[]OffsetForLeaderPartition", fields=(
                F("Partition", "int32"),
                F("CurrentLeaderEpoch", "int32", "2+", default=-1),
                F("LeaderEpoch", "int32"),
            )),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "2+"),
        F("Topics", "[]OffsetForLeaderTopicResult", fields=(
            F("Topic", "string"),
            F("Partitions", "[]EpochEndOffset", fields=(
                F("ErrorCode", "int16"),
                F("Partition", "int32"),
                F("LeaderEpoch", "int32", "1+", default=-1),
                F("EndOffset", "int64", default=-1),
            )),
        )),
    ),
)  # fmt: skip


DESCRIBE_CLUSTER = Api(
    key=60,
    name="DescribeCluster",
    valid=Versions.parse("0-2"),
    flexible=0,
    request=(
        F("IncludeClusterAuthorizedOperations", "bool"),
        F("EndpointType", "int8", "1+", default=1),
        F("IncludeFencedBrokers", "bool", "2+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("ErrorMessage", "string", nullable="0+", default=None),
        F("EndpointType", "int8", "1+", default=1),
        F("ClusterId", "string"),
        F("ControllerId", "int32", default=-1),
        F("Brokers", "[]DescribeClusterBroker", fields=(
            F("BrokerId", "int32"),
            F("Host", "string"),
            F("Port", "int32"),
            F("Rack", "string", nullable="0+", default=None),
            F("IsFenced", "bool", "2+"),
        )),
        F("ClusterAuthorizedOperations", "int32", default=-2147483648),
    ),
)  # fmt: skip


DESCRIBE_PRODUCERS = Api(
    key=61,
    name="DescribeProducers",
    valid=Versions.parse("0"),
    flexible=0,
    request=(
        F("Topics", "[]TopicRequest", fields=(
            F("Name", "string"),
            F("PartitionIndexes", "[]int32"),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("Topics", "[]TopicResponse", fields=(
            F("Name", "string"),
            F("Partitions", "[]PartitionResponse", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("ErrorMessage", "string", nullable="0+", default=None),
                F("ActiveProducers", "[]ProducerState", fields=(
                    F("ProducerId", "int64"),
                    F("ProducerEpoch", "int32"),
                    F("LastSequence", "int32", default=-1),
                    F("LastTimestamp", "int64", default=-1),
                    F("CoordinatorEpoch", "int32"),
                    F("CurrentTxnStartOffset", "int64", default=-1),
                )),
            )),
        )),
    ),
)  # fmt: skip


APIS: tuple[Api, ...] = (
    PRODUCE,
    FETCH,
    LIST_OFFSETS,
    METADATA,
    DELETE_RECORDS,
    INIT_PRODUCER_ID,
    OFFSET_FOR_LEADER_EPOCH,
    DESCRIBE_CLUSTER,
    DESCRIBE_PRODUCERS,
)
