"""Errors the storage layer raises, each with the Kafka error code a broker answers with.

Malformed batch bytes surface as `client.protocol.errors.CorruptMessageError` (CORRUPT_MESSAGE)
from the batch codec; everything below is the log's own rule being broken.
"""

from __future__ import annotations

from tidelog.client.protocol.errors import ErrorCode


class StorageError(Exception):
    """Base of the storage layer's errors."""

    error_code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(StorageError):
    """An offset outside [log start offset, log end offset]."""

    error_code = ErrorCode.OFFSET_OUT_OF_RANGE


class RecordTooLargeError(StorageError):
    """One batch is larger than the log's `max_message_bytes`."""

    error_code = ErrorCode.MESSAGE_TOO_LARGE


class RecordListTooLargeError(StorageError):
    """An append is larger than a whole segment."""

    error_code = ErrorCode.RECORD_LIST_TOO_LARGE


class InvalidRecordError(StorageError):
    """A batch that is well formed but breaks a rule of the log (counts, offsets)."""

    error_code = ErrorCode.INVALID_RECORD


class LogOfflineError(StorageError):
    """An earlier I/O failure left the log's files in an unknown state; reopen to recover."""

    error_code = ErrorCode.KAFKA_STORAGE_ERROR


class CorruptCheckpointError(StorageError):
    """A checkpoint file whose checksum or syntax is wrong."""

    error_code = ErrorCode.KAFKA_STORAGE_ERROR
