"""Exceptions the client raises.

Every exception is a `KafkaError`. `retriable` says whether the same operation may succeed
if tried again later; the client already retries those internally (within its timeouts), so
a retriable error that reaches the caller means the retries ran out.

Errors a broker reports with an error code are `BrokerResponseError`s carrying the
`ErrorCode`; `error_for_code` builds the most specific subclass for a code, so callers can
catch e.g. `TopicAlreadyExistsError` rather than compare codes.
"""

from __future__ import annotations

from tidelog.client.protocol.errors import ErrorCode


class KafkaError(Exception):
    """Base of every error the client raises."""

    retriable: bool = False


class ConfigError(KafkaError, ValueError):
    """A configuration value is invalid or contradicts another one."""


class KafkaConnectionError(KafkaError):
    """A connection to a broker could not be made or broke while requests were in flight."""

    retriable = True


class KafkaTimeoutError(KafkaError):
    """An operation did not finish within its timeout (request, delivery, or blocking)."""

    retriable = True


class KafkaProtocolError(KafkaError):
    """A broker sent bytes that break the Kafka wire format, or a response we cannot use."""


class IncompatibleBrokerError(KafkaError):
    """The broker supports no version of an API that the client needs."""


class ClientClosedError(KafkaError):
    """The producer, consumer or admin client was used after it was closed (or before open)."""


class RecordTooLargeError(KafkaError):
    """A record is larger than `max_request_size` or `buffer_memory` allows."""


class NoOffsetForPartitionError(KafkaError):
    """A partition has no position and `auto_offset_reset` is "none"."""


class CommitFailedError(KafkaError):
    """An offset commit was refused because this consumer is no longer (or not yet) a member
    of the group's current generation: its partitions were (or are being) given to others.
    Retrying cannot help; the consumer rejoins on its own and the records since the last
    successful commit will be consumed again (by whichever member gets their partitions)."""


class BrokerResponseError(KafkaError):
    """A broker answered with an error code. `code` is the `ErrorCode`."""

    code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(self, message: str | None = None, *, code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.retriable = self.code.retriable
        text = self.code.name if message is None else f"{self.code.name}: {message}"
        super().__init__(text)


class OffsetOutOfRangeError(BrokerResponseError):
    code = ErrorCode.OFFSET_OUT_OF_RANGE


class CorruptRecordError(BrokerResponseError):
    code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicOrPartitionError(BrokerResponseError):
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class LeaderNotAvailableError(BrokerResponseError):
    code = ErrorCode.LEADER_NOT_AVAILABLE


class NotLeaderOrFollowerError(BrokerResponseError):
    code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class RequestTimedOutError(BrokerResponseError):
    code = ErrorCode.REQUEST_TIMED_OUT


class MessageTooLargeError(BrokerResponseError):
    code = ErrorCode.MESSAGE_TOO_LARGE


class InvalidTopicError(BrokerResponseError):
    code = ErrorCode.INVALID_TOPIC_EXCEPTION


class NotEnoughReplicasError(BrokerResponseError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS


class NotEnoughReplicasAfterAppendError(BrokerResponseError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND


class InvalidRequiredAcksError(BrokerResponseError):
    code = ErrorCode.INVALID_REQUIRED_ACKS


class TopicAuthorizationFailedError(BrokerResponseError):
    code = ErrorCode.TOPIC_AUTHORIZATION_FAILED


class ClusterAuthorizationFailedError(BrokerResponseError):
    code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED


class UnsupportedVersionError(BrokerResponseError):
    code = ErrorCode.UNSUPPORTED_VERSION


class TopicAlreadyExistsError(BrokerResponseError):
    code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(BrokerResponseError):
    code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(BrokerResponseError):
    code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidConfigError(BrokerResponseError):
    code = ErrorCode.INVALID_CONFIG


class NotControllerError(BrokerResponseError):
    code = ErrorCode.NOT_CONTROLLER


class InvalidRequestError(BrokerResponseError):
    code = ErrorCode.INVALID_REQUEST


class PolicyViolationError(BrokerResponseError):
    code = ErrorCode.POLICY_VIOLATION


class OutOfOrderSequenceNumberError(BrokerResponseError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(BrokerResponseError):
    code = ErrorCode.INVALID_PRODUCER_EPOCH


class UnknownProducerIdError(BrokerResponseError):
    code = ErrorCode.UNKNOWN_PRODUCER_ID


class ProducerFencedError(BrokerResponseError):
    code = ErrorCode.PRODUCER_FENCED


class UnsupportedCompressionTypeError(BrokerResponseError):
    code = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE


class InvalidRecordError(BrokerResponseError):
    code = ErrorCode.INVALID_RECORD


class InvalidTimestampError(BrokerResponseError):
    code = ErrorCode.INVALID_TIMESTAMP


class KafkaStorageError(BrokerResponseError):
    code = ErrorCode.KAFKA_STORAGE_ERROR


class IllegalGenerationError(BrokerResponseError):
    code = ErrorCode.ILLEGAL_GENERATION


class UnknownMemberIdError(BrokerResponseError):
    code = ErrorCode.UNKNOWN_MEMBER_ID


class RebalanceInProgressError(BrokerResponseError):
    code = ErrorCode.REBALANCE_IN_PROGRESS


class FencedInstanceIdError(BrokerResponseError):
    """Another consumer with the same `group_instance_id` took this one's place."""

    code = ErrorCode.FENCED_INSTANCE_ID


class GroupAuthorizationFailedError(BrokerResponseError):
    code = ErrorCode.GROUP_AUTHORIZATION_FAILED


class CoordinatorNotAvailableError(BrokerResponseError):
    code = ErrorCode.COORDINATOR_NOT_AVAILABLE


class NotCoordinatorError(BrokerResponseError):
    code = ErrorCode.NOT_COORDINATOR


class GroupIdNotFoundError(BrokerResponseError):
    code = ErrorCode.GROUP_ID_NOT_FOUND


class NonEmptyGroupError(BrokerResponseError):
    """The group has members; only an empty group can be deleted."""

    code = ErrorCode.NON_EMPTY_GROUP


_BY_CODE: dict[ErrorCode, type[BrokerResponseError]] = {
    cls.code: cls for cls in BrokerResponseError.__subclasses__()
}


def error_for_code(code: int, message: str | None = None) -> BrokerResponseError:
    """The most specific `BrokerResponseError` for a Kafka error code (never for NONE)."""
    try:
        error_code = ErrorCode(code)
    except ValueError:
        return BrokerResponseError(f"unknown error code {code}: {message or ''}".rstrip(": "))
    if error_code is ErrorCode.NONE:
        raise ValueError("error code 0 (NONE) is not an error")
    cls = _BY_CODE.get(error_code)
    if cls is None:
        return BrokerResponseError(message, code=error_code)
    return cls(message)


def raise_for_code(code: int, message: str | None = None) -> None:
    """Raise `error_for_code(code, message)` unless `code` is NONE (0)."""
    if code != ErrorCode.NONE:
        raise error_for_code(code, message)
