"""Authentication and administration APIs: SaslHandshake (17), SaslAuthenticate (36),
DescribeAcls (29), CreateAcls (30), DeleteAcls (31), DescribeConfigs (32), AlterConfigs (33),
IncrementalAlterConfigs (44), CreateTopics (19), DeleteTopics (20), CreatePartitions (37).

Transcribed from Kafka's message definitions: each API's validVersions and first flexible
version, and every field's versions, nullableVersions, tag and non-zero default.
tests/protocol/test_schema_agreement.py checks them against the JSON at every version.
Versions that Kafka 4 no longer accepts (CreateTopics 0-1, DeleteTopics 0, DescribeConfigs 0,
DescribeAcls/CreateAcls/DeleteAcls 0) are absent.
"""

from tidelog.client.protocol.schema import Api, F, Versions

SASL_HANDSHAKE = Api(
    key=17,
    name="SaslHandshake",
    valid=Versions.parse("0-1"),
    flexible=None,
    request=(
        F("Mechanism", "string"),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("Mechanisms", "[]string"),
    ),
)  # fmt: skip


SASL_AUTHENTICATE = Api(
    key=36,
    name="SaslAuthenticate",
    valid=Versions.parse("0-2"),
    flexible=2,
    request=(
        F("AuthBytes", "bytes"),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("ErrorMessage", "string", nullable="0+"),
        F("AuthBytes", "bytes"),
        F("SessionLifetimeMs", "int64", "1+"),
    ),
)  # fmt: skip


DESCRIBE_ACLS = Api(
    key=29,
    name="DescribeAcls",
    valid=Versions.parse("1-3"),
    flexible=2,
    request=(
        F("ResourceTypeFilter", "int8"),
        F("ResourceNameFilter", "string", nullable="0+"),
        F("PatternTypeFilter", "int8", "1+", default=3),
        F("PrincipalFilter", "string", nullable="0+"),
        F("HostFilter", "string", nullable="0+"),
        F("Operation", "int8"),
        F("PermissionType", "int8"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16"),
        F("ErrorMessage", "string", nullable="0+"),
        F("Resources", "[]DescribeAclsResource", fields=(
            F("ResourceType", "int8"),
            F("ResourceName", "string"),
            F("PatternType", "int8", "1+", default=3),
            F("Acls", "[]AclDescription", fields=(
                F("Principal", "string"),
                F("Host", "string"),
                F("Operation", "int8"),
                F("PermissionType", "int8"),
            )),
        )),
    ),
)  # fmt: skip


CREATE_ACLS = Api(
    key=30,
    name="CreateAcls",
    valid=Versions.parse("1-3"),
    flexible=2,
    request=(
        F("Creations", "[]AclCreation", fields=(
            F("ResourceType", "int8"),
            F("ResourceName", "string"),
            F("ResourcePatternType", "int8", "1+", default=3),
            F("Principal", "string"),
            F("Host", "string"),
            F("Operation", "int8"),
            F("PermissionType", "int8"),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("Results", "[]AclCreationResult", fields=(
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+"),
        )),
    ),
)  # fmt: skip


DELETE_ACLS = Api(
    key=31,
    name="DeleteAcls",
    valid=Versions.parse("1-3"),
    flexible=2,
    request=(
        F("Filters", "[]DeleteAclsFilter", fields=(
            F("ResourceTypeFilter", "int8"),
            F("ResourceNameFilter", "string", nullable="0+"),
            F("PatternTypeFilter", "int8", "1+", default=3),
            F("PrincipalFilter", "string", nullable="0+"),
            F("HostFilter", "string", nullable="0+"),
            F("Operation", "int8"),
            F("PermissionType", "int8"),
        )),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("FilterResults", "[]DeleteAclsFilterResult", fields=(
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+"),
            F("MatchingAcls", "[]DeleteAclsMatchingAcl", fields=(
                F("ErrorCode", "int16"),
                F("ErrorMessage", "string", nullable="0+"),
                F("ResourceType", "int8"),
                F("ResourceName", "string"),
                F("PatternType", "int8", "1+", default=3),
                F("Principal", "string"),
                F("Host", "string"),
                F("Operation", "int8"),
                F("PermissionType", "int8"),
            )),
        )),
    ),
)  # fmt: skip


DESCRIBE_CONFIGS = Api(
    key=32,
    name="DescribeConfigs",
    valid=Versions.parse("1-4"),
    flexible=4,
    request=(
        F("Resources", "[]DescribeConfigsResource", fields=(
            F("ResourceType", "int8"),
            F("ResourceName", "string"),
            F("ConfigurationKeys", "[]string", nullable="0+"),
        )),
        F("IncludeSynonyms", "bool", "1+"),
        F("IncludeDocumentation", "bool", "3+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("Results", "[]DescribeConfigsResult", fields=(
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+"),
            F("ResourceType", "int8"),
            F("ResourceName", "string"),
            F("Configs", "[]DescribeConfigsResourceResult", fields=(
                F("Name", "string"),
                F("Value", "string", nullable="0+"),
                F("ReadOnly", "bool"),
                F("ConfigSource", "int8", "1+", default=-1),
                F("IsDefault", "bool", "0"),
                F("IsSensitive", "bool"),
                F("Synonyms", "[]DescribeConfigsSynonym", "1+", fields=(
                    F("Name", "string", "1+"),
                    F("Value", "string", "1+", nullable="0+"),
                    F("Source", "int8", "1+"),
                )),
                F("ConfigType", "int8", "3+"),
                F("Documentation", "string", "3+", nullable="0+"),
            )),
        )),
    ),
)  # fmt: skip


# AlterConfigs and IncrementalAlterConfigs answer with the same per-resource results.
_ALTER_CONFIGS_RESPONSE = (
    F("ThrottleTimeMs", "int32"),
    F("Responses", "[]AlterConfigsResourceResponse", fields=(
        F("ErrorCode", "int16"),
        F("ErrorMessage", "string", nullable="0+"),
        F("ResourceType", "int8"),
        F("ResourceName", "string"),
    )),
)  # fmt: skip


ALTER_CONFIGS = Api(
    key=33,
    name="AlterConfigs",
    valid=Versions.parse("0-2"),
    flexible=2,
    request=(
        F("Resources", "[]AlterConfigsResource", fields=(
            F("ResourceType", "int8"),
            F("ResourceName", "string"),
            F("Configs", "[]AlterableConfig", fields=(
                F("Name", "string"),
                F("Value", "string", nullable="0+"),
            )),
        )),
        F("ValidateOnly", "bool"),
    ),
    response=_ALTER_CONFIGS_RESPONSE,
)  # fmt: skip


INCREMENTAL_ALTER_CONFIGS = Api(
    key=44,
    name="IncrementalAlterConfigs",
    valid=Versions.parse("0-1"),
    flexible=1,
    request=(
        F("Resources", "[]AlterConfigsResource", fields=(
            F("ResourceType", "int8"),
            F("ResourceName", "string"),
            F("Configs", "[]AlterableConfig", fields=(
                F("Name", "string"),
                F("ConfigOperation", "int8"),
                F("Value", "string", nullable="0+"),
            )),
        )),
        F("ValidateOnly", "bool"),
    ),
    response=_ALTER_CONFIGS_RESPONSE,
)  # fmt: skip


CREATE_TOPICS = Api(
    key=19,
    name="CreateTopics",
    valid=Versions.parse("2-7"),
    flexible=5,
    request=(
        F("Topics", "[]CreatableTopic", fields=(
            F("Name", "string"),
            F("NumPartitions", "int32"),
            F("ReplicationFactor", "int16"),
            F("Assignments", "[]CreatableReplicaAssignment", fields=(
                F("PartitionIndex", "int32"),
                F("BrokerIds", "[]int32"),
            )),
            F("Configs", "[]CreatableTopicConfig", fields=(
                F("Name", "string"),
                F("Value", "string", nullable="0+"),
            )),
        )),
        F("timeoutMs", "int32", default=60000),
        F("validateOnly", "bool", "1+"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "2+"),
        F("Topics", "[]CreatableTopicResult", fields=(
            F("Name", "string"),
            F("TopicId", "uuid", "7+"),
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", "1+", nullable="0+"),
            F("TopicConfigErrorCode", "int16", "5+", tag=0),
            F("NumPartitions", "int32", "5+", default=-1),
            F("ReplicationFactor", "int16", "5+", default=-1),
            F("Configs", "[]CreatableTopicConfigs", "5+", nullable="5+", fields=(
                F("Name", "string", "5+"),
                F("Value", "string", "5+", nullable="5+"),
                F("ReadOnly", "bool", "5+"),
                F("ConfigSource", "int8", "5+", default=-1),
                F("IsSensitive", "bool", "5+"),
            )),
        )),
    ),
)  # fmt: skip


DELETE_TOPICS = Api(
    key=20,
    name="DeleteTopics",
    valid=Versions.parse("1-6"),
    flexible=4,
    request=(
        F("Topics", "[]DeleteTopicState", "6+", fields=(
            F("Name", "string", "6+", nullable="6+", default=None),
            F("TopicId", "uuid", "6+"),
        )),
        F("TopicNames", "[]string", "0-5"),
        F("TimeoutMs", "int32"),
    ),
    response=(
        F("ThrottleTimeMs", "int32", "1+"),
        F("Responses", "[]DeletableTopicResult", fields=(
            F("Name", "string", nullable="6+"),
            F("TopicId", "uuid", "6+"),
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", "5+", nullable="5+", default=None),
        )),
    ),
)  # fmt: skip


CREATE_PARTITIONS = Api(
    key=37,
    name="CreatePartitions",
    valid=Versions.parse("0-3"),
    flexible=2,
    request=(
        F("Topics", "[]CreatePartitionsTopic", fields=(
            F("Name", "string"),
            F("Count", "int32"),
            F("Assignments", "[]CreatePartitionsAssignment", nullable="0+", fields=(
                F("BrokerIds", "[]int32"),
            )),
        )),
        F("TimeoutMs", "int32"),
        F("ValidateOnly", "bool"),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("Results", "[]CreatePartitionsTopicResult", fields=(
            F("Name", "string"),
            F("ErrorCode", "int16"),
            F("ErrorMessage", "string", nullable="0+", default=None),
        )),
    ),
)  # fmt: skip


ELECT_LEADERS = Api(
    key=43,
    name="ElectLeaders",
    valid=Versions.parse("0-2"),
    flexible=2,
    request=(
        F("ElectionType", "int8", "1+"),
        F("TopicPartitions", "[]TopicPartitions", nullable="0+", fields=(
            F("Topic", "string"),
            F("Partitions", "[]int32"),
        )),
        F("TimeoutMs", "int32", default=60000),
    ),
    response=(
        F("ThrottleTimeMs", "int32"),
        F("ErrorCode", "int16", "1+"),
        F("ReplicaElectionResults", "[]ReplicaElectionResult", fields=(
            F("Topic", "string"),
            F("PartitionResult", "[]PartitionResult", fields=(
                F("PartitionId", "int32"),
                F("ErrorCode", "int16"),
                F("ErrorMessage", "string", nullable="0+"),
            )),
        )),
    ),
)  # fmt: skip


APIS: tuple[Api, ...] = (
    SASL_HANDSHAKE,
    SASL_AUTHENTICATE,
    DESCRIBE_ACLS,
    CREATE_ACLS,
    DELETE_ACLS,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    INCREMENTAL_ALTER_CONFIGS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    CREATE_PARTITIONS,
    ELECT_LEADERS,
)
