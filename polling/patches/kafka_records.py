"""Reading fetched Kafka records in the worker, faster than kafka-python does.

kafka-python turns each fetched record into a `ConsumerRecord` through a chain of Python
calls per field (a varint function per number, a property per header field of the
batch, a record object, then the tuple): about half of the worker's own Python, which
bounds its apply rate (docs/decisions/0008-worker-throughput.md).
`LeanPartitionRecords` reads the common batch, message format v2 uncompressed, in one
loop with the short varints read by hand, and yields the same `ConsumerRecord`s.

It takes the place of kafka-python's `Fetcher.PartitionRecords` in one consumer
(`install`), and keeps its contract: the batch's CRC is checked first, control batches
are skipped, the fetch position moves record by record (a poll may stop inside a
batch), and a malformed record raises `CorruptRecordError`, before any record of its
batch is handed out (kafka-python hands out those before the malformed one first; the
one other difference is a record's attributes byte, under `plain_records`).
Everything else, a compressed or pre-v2 batch, a consumer with deserializers or reading
only committed transactions, goes through kafka-python's own code. kafka-python is
pinned (requirements.txt); the tests in `polling/patches/tests/test_kafka_records.py` compare both
readers record by record and fail if an upgrade moves what `install` relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

logger = logging.getLogger(__name__)

_HEADER_SIZE = DefaultRecordBatch.HEADER_STRUCT.size
_NO_COMPRESSION = DefaultRecordBatch.CODEC_NONE
_LOG_APPEND_TIME = DefaultRecordBatch.LOG_APPEND_TIME
_new = tuple.__new__


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at pos: (value, next position).

    One and two bytes, which every length, delta and size of a vote's record fits
    (up to 8,191), are read here; longer ones by kafka-python.
    """
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    second = data[pos + 1]
    if second < 0x80:
        raw = (byte & 0x7F) | (second << 7)
        return (raw >> 1) ^ -(raw & 1), pos + 2
    return decode_varint(data, pos)


def plain_records(batch: DefaultRecordBatch, topic: str, partition: int) -> tuple[list[ConsumerRecord], list[int]]:
    """Every record of an uncompressed v2 batch, as kafka-python would yield them, and
    each one's size (kafka-python's fetch metrics count those).

    The record layout (KIP-98): length, attributes (an Int8), timestamp delta, offset
    delta, key and value (length-prefixed, -1 for null), then headers; lengths, deltas
    and counts are zigzag varints. kafka-python reads the attributes as a varint too,
    which differs only for a byte of 0x80 or more; producers write 0 there, and this
    reads it as the protocol (and the Java client) does.
    """
    data = bytes(batch._buffer)
    base_offset = batch.base_offset
    epoch = batch.leader_epoch
    timestamp_type = batch.timestamp_type
    first_timestamp = batch.first_timestamp
    fixed_timestamp = batch.max_timestamp if timestamp_type == _LOG_APPEND_TIME else None
    pos = _HEADER_SIZE
    records = []
    append = records.append
    sizes = []
    append_size = sizes.append
    try:
        for _ in range(batch.records_count):
            length, pos = _varint(data, pos)
            start = pos
            timestamp_delta, pos = _varint(data, pos + 1)  # past the attributes, unused
            offset_delta, pos = _varint(data, pos)
            # Key and value: a length, then its bytes; a negative length is null.
            key_size, pos = _varint(data, pos)
            key = data[pos : pos + key_size] if key_size >= 0 else None
            pos += key_size if key_size > 0 else 0
            value_size, pos = _varint(data, pos)
            value = data[pos : pos + value_size] if value_size >= 0 else None
            pos += value_size if value_size > 0 else 0
            if data[pos] == 0:  # no headers, as in every vote
                pos += 1
                headers = []
                header_size = -1
            else:
                header_count, pos = _varint(data, pos)
                headers, header_size, pos = _headers(data, pos, header_count)
            if pos - start != length or pos > len(data):
                raise CorruptRecordError(
                    f"record at offset {base_offset + offset_delta} has {pos - start} bytes, its length says {length}"
                )
            append_size(length)
            append(
                _new(
                    ConsumerRecord,
                    (
                        topic,
                        partition,
                        epoch,
                        base_offset + offset_delta,
                        fixed_timestamp if fixed_timestamp is not None else first_timestamp + timestamp_delta,
                        timestamp_type,
                        key,
                        value,
                        headers,
                        None,
                        key_size if key is not None else -1,
                        value_size if value is not None else -1,
                        header_size,
                    ),
                )
            )
    except (IndexError, ValueError) as exc:
        raise CorruptRecordError(f"malformed record in the batch at offset {base_offset}: {exc!r}") from exc
    if pos != len(data):
        raise CorruptRecordError(f"{len(data) - pos} bytes left after the batch at offset {base_offset}")
    return records, sizes


def _headers(data: bytes, pos: int, count: int) -> tuple[list[tuple[str, bytes | None]], int, int]:
    if count < 0:
        raise CorruptRecordError(f"invalid number of record headers: {count}")
    headers = []
    size = 0
    for _ in range(count):
        key_size, pos = _varint(data, pos)
        if key_size < 0:
            raise CorruptRecordError(f"invalid header key size: {key_size}")
        encoded = data[pos : pos + key_size]
        pos += key_size
        value_size, pos = _varint(data, pos)
        if value_size >= 0:
            value = data[pos : pos + value_size]
            pos += value_size
            size += key_size + value_size
        else:
            value = None
            size += key_size
        headers.append((encoded.decode("utf-8"), value))
    # kafka-python's size of no headers is -1, however their count was written.
    return headers, size if headers else -1, pos


def _record_sizes(record) -> tuple[int, int, int]:
    key_size = len(record.key) if record.key is not None else -1
    value_size = len(record.value) if record.value is not None else -1
    headers = record.headers
    header_size = sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers) if headers else -1
    return key_size, value_size, header_size


class LeanPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's records of one fetched partition, read by `plain_records` where it can."""

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer) -> Iterator[ConsumerRecord]:
        if (
            key_deserializer is not None
            or value_deserializer is not None
            or self.isolation_level != IsolationLevel.READ_UNCOMMITTED
        ):
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        topic, partition = tp.topic, tp.partition
        last = None
        batch = records.next_batch()
        while batch is not None:
            last = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {tp} at offset {batch.base_offset} failed crc check"
                )
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if batch.is_control_batch:  # a transaction's marker, not a message
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            if batch.magic == 2 and batch.compression_type == _NO_COMPRESSION:
                plain, sizes = plain_records(batch, topic, partition)
                for record, size in zip(plain, sizes):
                    self.records_read += 1
                    self.bytes_read += size
                    self.next_fetch_offset = record.offset + 1
                    yield record
            else:
                for record in batch:
                    if self.check_crcs and not record.validate_crc():
                        raise CorruptRecordError(
                            f"Record for partition {tp} at offset {record.offset} failed crc check"
                        )
                    self.records_read += 1
                    self.bytes_read += record.size_in_bytes
                    self.next_fetch_offset = record.offset + 1
                    yield _new(
                        ConsumerRecord,
                        (
                            topic,
                            partition,
                            self.leader_epoch,
                            record.offset,
                            record.timestamp,
                            record.timestamp_type,
                            record.key,
                            record.value,
                            record.headers,
                            record.checksum,
                            *_record_sizes(record),
                        ),
                    )
            batch = records.next_batch()
        # Format v2 keeps a batch's last offset even when compaction removed its last
        # records: fetch from past it, or the same batch comes back forever.
        if last is not None and last.magic == 2:
            self.next_fetch_offset = last.next_offset
        self.drain()


def install(consumer) -> bool:
    """Make this consumer read its fetched records with `LeanPartitionRecords`.

    Returns False, and logs why, when this kafka-python has no fetcher of the expected
    shape (the consumer then reads as kafka-python does, only slower).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if isinstance(fetcher, Fetcher) and getattr(fetcher, "PartitionRecords", None) is LeanPartitionRecords:
        return True
    if not isinstance(fetcher, Fetcher) or getattr(fetcher, "PartitionRecords", None) is not Fetcher.PartitionRecords:
        logger.warning(
            "kafka-python's fetcher is not the one polling.patches.kafka_records knows; "
            "records are read by kafka-python"
        )
        return False
    fetcher.PartitionRecords = LeanPartitionRecords
    return True
