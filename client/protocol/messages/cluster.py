"""KRaft cluster-control APIs, between brokers and the controller: AlterPartition (56),
Envelope (58), BrokerRegistration (62), BrokerHeartbeat (63), UnregisterBroker (64),
AllocateProducerIds (67).

Transcribed from Kafka's message definitions: each API's validVersions and first flexible
version, and every field's versions, nullableVersions, tag and non-zero default.
tests/protocol/test_schema_agreement.py checks them against the JSON at every version (the
copies in tests/protocol/kafka_definitions). Versions that Kafka 4 no longer accepts
(AlterPartition 0-1) are absent. The broker neither routes nor advertises these APIs: only
`broker.handlers.ROUTES` does that.
"""

from tidelog.client.protocol.schema import Api, F, Versions

ALTER_PARTITION = Api(
    key=56,
    name="AlterPartition",
    valid=Versions.parse("2-3"),
    flexible=0,
    request=(
        F("BrokerId", "int32"),
        F("BrokerEpoch", "int64", default=-1),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string", "0-1"),
            F("TopicId", "uuid", "2+"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("LeaderEpoch", "int32"),
                F("NewIsr", "[]int32", "0-2"),
                F("NewIsrWithEpochs", "[]BrokerState", "3+", fields=(
                    F("BrokerId", "int32", "3+"),
                    F("BrokerEpoch", "int64", "3+", default=-1),
                )),
                F("LeaderRecoveryState", "int8", "1+"),
                F("PartitionEpoch", "int32"),
            )),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("Topics", "[]TopicData", fields=(
            F("TopicName", "string", "0-1"),
            F("TopicId", "uuid", "2+"),
            F("Partitions", "[]PartitionData", fields=(
                F("PartitionIndex", "int32"),
                F("ErrorCode", "int16"),
                F("LeaderId", "int32"),
                F("LeaderEpoch", "int32"),
                F("Isr", "[]int32"),
                F("LeaderRecoveryState", "int8", "1+"),
                F("PartitionEpoch", "int32"),
            )),
        )),
    ),
)  # fmt: skip


ENVELOPE = Api(
    key=58,
    name="Envelope",
    valid=Versions.parse("0"),
    flexible=0,
    request=(
        F("RequestData", "bytes"),
        F("RequestPrincipal", "bytes", nullable="0+"),
        F("ClientHostAddress", "bytes"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ResponseData", "bytes", nullable="0+", default=None),
        F("ErrorCode", "int16"),
    ),
)  # fmt: skip


BROKER_REGISTRATION = Api(
    key=62,
    name="BrokerRegistration",
    valid=Versions.parse("0-4"),
    flexible=0,
    request=(
        F("BrokerId", "int32"),
        F("ClusterId", "string"),
        F("IncarnationId", "uuid"),
        F("Listeners", "[]Listener", fields=(
            F("Name", "string"),
            F("Host", "string"),
            F("Port", "uint16"),
            F("SecurityProtocol", "int16"),
        )),
        F("Features", "[]Feature", fields=(
            F("Name", "string"),
            F("MinSupportedVersion", "int16"),
            F("MaxSupportedVersion", "int16"),
        )),
        F("Rack", "string", nullable="0+"),
        F("IsMigratingZkBroker", "bool", "1+"),
        F("LogDirs", "[]uuid", "2+"),
        F("PreviousBrokerEpoch", "int64", "3+", default=-1),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("BrokerEpoch", "int64", default=-1),
    ),
)  # fmt: skip


BROKER_HEARTBEAT = Api(
    key=63,
    name="BrokerHeartbeat",
    valid=Versions.parse("0-1"),
    flexible=0,
    request=(
        F("BrokerId", "int32"),
        F("BrokerEpoch", "int64", default=-1),
        F("CurrentMetadataOffset", "int64"),
        F("WantFence", "bool"),
        F("WantShutDown", "bool"),
        F("OfflineLogDirs", "[]uuid", "1+", tag=0),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("IsCaughtUp", "bool"),
        F("IsFenced", "bool", default=True),
        F("ShouldShutDown", "bool"),
    ),
)  # fmt: skip


UNREGISTER_BROKER = Api(
    key=64,
    name="UnregisterBroker",
    valid=Versions.parse("0"),
    flexible=0,
    request=(
        F("BrokerId", "int32"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("ErrorMessage", "string", nullable="0+"),
    ),
)  # fmt: skip


ALLOCATE_PRODUCER_IDS = Api(
    key=67,
    name="AllocateProducerIds",
    valid=Versions.parse("0"),
    flexible=0,
    request=(
        F("BrokerId", "int32"),
        F("BrokerEpoch", "int64", default=-1),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("ProducerIdStart", "int64"),
        F("ProducerIdLen", "int32"),
    ),
)  # fmt: skip


APIS: tuple[Api, ...] = (
    ALTER_PARTITION,
    ENVELOPE,
    BROKER_REGISTRATION,
    BROKER_HEARTBEAT,
    UNREGISTER_BROKER,
    ALLOCATE_PRODUCER_IDS,
)
