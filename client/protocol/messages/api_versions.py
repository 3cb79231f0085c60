"""ApiVersions (18)."""

from tidelog.client.protocol.schema import Api, F, Versions

API_VERSIONS = Api(
    key=18,
    name="ApiVersions",
    valid=Versions.parse("0-4"),
    flexible=3,
    request=(
        F("ClientSoftwareName", "string", "3+"),
        F("ClientSoftwareVersion", "string", "3+"),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("ApiKeys", "[]ApiVersion", fields=(
            F("ApiKey", "int16"),
            F("MinVersion", "int16"),
            F("MaxVersion", "int16"),
        )),
        F("ThrottleTimeMs", "int32", "1+"),
        F("SupportedFeatures", "[]SupportedFeatureKey", "3+", tag=0, fields=(
            F("Name", "string", "3+"),
            F("MinVersion", "int16", "3+"),
            F("MaxVersion", "int16", "3+"),
        )),
        F("FinalizedFeaturesEpoch", "int64", "3+", tag=1, default=-1),
        F("FinalizedFeatures", "[]FinalizedFeatureKey", "3+", tag=2, fields=(
            F("Name", "string", "3+"),
            F("MaxVersionLevel", "int16", "3+"),
            F("MinVersionLevel", "int16", "3+"),
        )),
        F("ZkMigrationReady", "bool", "3+", tag=3),
    ),
)  # fmt: skip
