"""The worker's lean record reader yields exactly what kafka-python's would.

Both readers read the same bytes, built by kafka-python's own batch builder in every
shape the log can hold, and must agree on every record, on where the fetch goes on, and
on what they count; corrupt bytes must be refused by both. The last tests run the reader
on the real broker's fetch responses, through the worker's consumer.
"""

from __future__ import annotations

import logging
import struct
import uuid
from datetime import UTC, datetime

import pytest
from django.conf import settings
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.record.util import calc_crc32c

from polling.patches import kafka_records as lean
from polls.kafka.events import VoteEvent
from polls.kafka.topics import vote_consumer
from testsupport.processes import wait_until

TP = TopicPartition("votes", 3)
T0 = 1_764_000_000_000


def batch(records, *, offset=0, magic=2, compression=0) -> bytes:
    """One batch of (timestamp, key, value, headers) records, as kafka-python writes it."""
    builder = MemoryRecordsBuilder(magic=magic, compression_type=compression, batch_size=10**7)
    for timestamp, key, value, headers in records:
        assert builder.append(timestamp=timestamp, key=key, value=value, headers=headers if magic == 2 else None)
    builder.close()
    raw = bytearray(builder.buffer())
    if magic == 2:  # the base offset, which the broker sets (outside the CRC)
        struct.pack_into(">q", raw, 0, offset)
    else:
        assert offset == 0
    return bytes(raw)


def with_attributes(data: bytes, *, set_bits: int) -> bytes:
    """The batch with attribute bits set (control, log-append time) and its CRC made right."""
    raw = bytearray(data)
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    (attributes,) = struct.unpack_from(">h", raw, at)
    struct.pack_into(">h", raw, at, attributes | set_bits)
    struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(raw)[at:]))
    return bytes(raw)


class Aggregator:
    """What kafka-python's fetch metrics are told when a partition's records drain."""

    def __init__(self) -> None:
        self.recorded = []

    def record(self, tp, num_bytes, num_records) -> None:
        self.recorded.append((num_bytes, num_records))


def read(cls, data: bytes, *, fetch_offset=0, takes=(None,), drain=False, **options):
    """Records taken in steps (a poll may stop inside a batch) with the reader's state
    after each: where the fetch goes on, what it counted, the leader epoch, whether it
    has more. Then what the fetch metrics were told, once drained (the fetcher drains a
    partition read to its end, and one it seeks, resets or gives back in mid-read)."""
    aggregator = Aggregator()
    partition = cls(fetch_offset, TP, MemoryRecords(data), metric_aggregator=aggregator, **options)
    steps = [
        (
            partition.take(n),
            partition.next_fetch_offset,
            partition.records_read,
            partition.bytes_read,
            partition.leader_epoch,
            bool(partition),
        )
        for n in takes
    ]
    if drain:
        partition.drain()
    return steps, aggregator.recorded


def assert_same(data: bytes, **kwargs):
    ours = read(lean.LeanPartitionRecords, data, **kwargs)
    theirs = read(Fetcher.PartitionRecords, data, **kwargs)
    assert ours == theirs
    return ours


def vote_values(count: int) -> list[bytes]:
    return [
        VoteEvent(
            vote_id=uuid.uuid4(),
            poll_id=7,
            options=(2,),
            voter_key=f"ip:10.0.0.{i % 250}",
            cast_at=datetime(2026, 11, 26, 10, tzinfo=UTC),
        ).to_bytes()
        for i in range(count)
    ]


def test_vote_batches_read_alike():
    values = vote_values(300)
    data = b"".join(
        batch([(T0 + i, b"7", v, []) for i, v in enumerate(values[start : start + 100])], offset=start)
        for start in (0, 100, 200)
    )
    [(got, next_offset, count, size, _, more)], recorded = assert_same(data)
    assert not more and recorded == [(size, 300)]
    assert [r.value for r in got] == values
    assert [r.offset for r in got] == list(range(300))
    assert (next_offset, count) == (300, 300)
    assert size > 300 * len(values[0])


@pytest.mark.parametrize(
    "shape",
    [
        "null key and value",
        "empty key and value",
        "one-byte edge",
        "two-byte edge",
        "long value",
        "very long value",
        "headers",
        "far timestamps",
        "wide offsets",
    ],
)
def test_every_record_shape_reads_alike(shape):
    records = {
        "null key and value": [(T0, None, None, []), (T0, None, b"v", []), (T0, b"k", None, [])],
        "empty key and value": [(T0, b"", b"", [])],
        # A zigzag varint holds up to 63 in one byte and up to 8,191 in two.
        "one-byte edge": [(T0, b"k" * 63, b"v" * 64, [])],
        "two-byte edge": [(T0, b"k" * 8_191, b"v" * 8_192, [])],
        "long value": [(T0, b"k" * 70, b"v" * 300, [])],
        "very long value": [(T0, b"k", b"v" * 20_000, [])],
        "headers": [(T0, b"k", b"v", [("trace", b"abc"), ("empty", None), ("clé", b"")]), (T0, b"k", b"v", [])],
        # Deltas of a day and negative ones (a producer's clock stepping back).
        "far timestamps": [(T0, b"k", b"a", []), (T0 + 86_400_000, b"k", b"b", []), (T0 - 5_000, b"k", b"c", [])],
        "wide offsets": [(T0 + i, b"k", str(i).encode(), []) for i in range(200)],
    }[shape]
    [(got, *_)], _ = assert_same(batch(records, offset=1_000_000_000_000))
    assert [(r.timestamp, r.key, r.value, r.headers) for r in got] == [(t, k, v, h) for t, k, v, h in records]


def test_a_poll_stopping_inside_a_batch_moves_the_position_record_by_record():
    data = batch([(T0, b"k", v, []) for v in vote_values(10)], offset=50) + batch(
        [(T0, b"k", v, []) for v in vote_values(5)], offset=60
    )
    steps, _ = assert_same(data, fetch_offset=50, takes=(3, 4, 100))
    assert [(len(got), next_offset, more) for got, next_offset, *_, more in steps] == [
        (3, 53, True),
        (4, 57, True),
        (8, 65, False),
    ]


def test_a_partition_drained_in_mid_read_reports_what_was_read():
    """The fetcher drains a partition it seeks, resets or gives back while its records
    are half taken; the fetch metrics then get the bytes and records read so far."""
    data = batch([(T0, b"k", v, []) for v in vote_values(5)]) + batch([(T0, b"k", b"x", [])], offset=5)
    for takes in ((3,), (5,), (6,)):
        steps, recorded = assert_same(data, takes=takes, drain=True)
        [(got, _, count, size, _, _)] = steps
        assert len(got) == count == takes[0] and recorded == [(size, count)] and size > 0


def test_the_leader_epoch_comes_from_each_batch():
    first, second = (bytearray(batch([(T0, b"k", b"v", [])], offset=o)) for o in (0, 1))
    struct.pack_into(">i", first, 12, 7)  # PartitionLeaderEpoch, set by the broker, outside the CRC
    struct.pack_into(">i", second, 12, 8)
    steps, _ = assert_same(bytes(first + second), takes=(1, 1))
    assert [(got[0].leader_epoch, epoch) for got, _, _, _, epoch, _ in steps] == [(7, 7), (8, 8)]


def test_a_batch_whose_last_records_were_compacted_away_is_fetched_past():
    """Format v2 keeps a batch's last offset when compaction removes its last records:
    the next fetch must start past it, or the same batch comes back forever."""
    raw = bytearray(batch([(T0, b"k", b"a", []), (T0, b"k", b"b", [])], offset=10))
    struct.pack_into(">i", raw, 23, 5)  # LastOffsetDelta: offsets 12 to 15 were compacted away
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(raw)[at:]))
    [(got, next_offset, *_)], _ = assert_same(bytes(raw))
    assert [r.offset for r in got] == [10, 11] and next_offset == 16


def test_unchecked_crcs_hand_out_the_bytes_as_they_are():
    data = batch([(T0, b"k", b"value", [])])
    flipped = data[:-2] + b"V" + data[-1:]
    [(got, *_)], _ = assert_same(flipped, check_crcs=False)
    assert got[0].value == b"valuV"


def test_the_attributes_byte_is_one_byte_as_the_protocol_says():
    """The one place the two readers differ on a well-formed CRC: kafka-python reads a
    record's attributes (an Int8, always 0 from producers) as a varint."""
    raw = bytearray(batch([(T0, b"k", b"v", [])]))
    raw[DefaultRecordBatch.HEADER_STRUCT.size + 1] = 0x80
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(raw)[at:]))
    [(ours, *_)], _ = read(lean.LeanPartitionRecords, bytes(raw))
    [(theirs, *_)], _ = read(Fetcher.PartitionRecords, bytes(raw))
    assert [(r.key, r.value) for r in ours] == [(b"k", b"v")]
    assert [(r.key, r.value) for r in theirs] == [(None, b"v")]


def test_no_headers_written_in_two_bytes_still_have_kafka_python_s_size():
    raw = bytearray(batch([(T0, b"k", b"v", [])]))
    assert raw[-1] == 0  # the header count, last byte of the record: 0 in two bytes instead
    raw[-1:] = b"\x80\x00"
    raw[DefaultRecordBatch.HEADER_STRUCT.size] += 2  # the record's length (zigzag: 2 per byte)
    struct.pack_into(">i", raw, 8, len(raw) - 12)
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(raw)[at:]))
    [(got, *_)], _ = assert_same(bytes(raw))
    assert (got[0].headers, got[0].serialized_header_size) == ([], -1)


def test_a_fetch_from_inside_a_batch_skips_what_came_before():
    data = batch([(T0, b"k", str(i).encode(), []) for i in range(10)], offset=20)
    [(got, next_offset, *_)], _ = assert_same(data, fetch_offset=26)
    assert [r.offset for r in got] == [26, 27, 28, 29] and next_offset == 30


def test_control_batches_are_skipped_and_log_append_time_is_the_batch_s():
    plain = batch([(T0, b"k", b"a", [])], offset=0)
    control = with_attributes(
        batch([(T0, b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00", [])], offset=1),
        set_bits=DefaultRecordBatch.CONTROL_MASK,
    )
    appended = with_attributes(
        batch([(T0, b"k", b"b", []), (T0 + 9, b"k", b"c", [])], offset=2),
        set_bits=DefaultRecordBatch.TIMESTAMP_TYPE_MASK,
    )
    [(got, next_offset, *_)], _ = assert_same(plain + control + appended)
    assert [(r.offset, r.value, r.timestamp_type) for r in got] == [(0, b"a", 0), (2, b"b", 1), (3, b"c", 1)]
    assert got[1].timestamp == got[2].timestamp == T0 + 9
    assert next_offset == 4


@pytest.mark.parametrize("magic,compression", [(2, 1), (1, 0), (0, 0), (1, 1)])
def test_compressed_and_old_format_batches_go_through_kafka_python(magic, compression):
    headers = [("trace", b"abc"), ("none", None)] if magic == 2 else []
    data = batch(
        [(T0 + i, b"k", v, headers) for i, v in enumerate(vote_values(20))], magic=magic, compression=compression
    )
    [(got, next_offset, *_)], _ = assert_same(data)
    assert len(got) == 20 and next_offset == 20
    assert {r.serialized_header_size for r in got} == ({12} if headers else {-1})


def test_deserializers_and_read_committed_use_kafka_python_s_reader(monkeypatch):
    data = batch([(T0, b"k", b"7", [])])
    unpacked = []
    original = Fetcher.PartitionRecords._unpack_records

    def counted(self, *args):
        unpacked.append(type(self))
        return original(self, *args)

    monkeypatch.setattr(Fetcher.PartitionRecords, "_unpack_records", counted)

    class Numbers:
        def deserialize(self, topic, headers, data):
            return int(data)

    [(got, *_)], _ = read(lean.LeanPartitionRecords, data, value_deserializer=Numbers())
    assert got[0].value == 7
    read(lean.LeanPartitionRecords, data, isolation_level=IsolationLevel.READ_COMMITTED)
    assert unpacked == [lean.LeanPartitionRecords] * 2
    read(lean.LeanPartitionRecords, data)
    assert len(unpacked) == 2


def corrupt(data: bytes, at: int, value: int, *, fix_crc: bool) -> bytes:
    raw = bytearray(data)
    raw[at] = value
    if fix_crc:
        start = DefaultRecordBatch.ATTRIBUTES_OFFSET
        struct.pack_into(">I", raw, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(raw)[start:]))
    return bytes(raw)


def test_a_flipped_bit_fails_the_crc_in_both():
    data = batch([(T0, b"k", v, []) for v in vote_values(3)])
    bad = corrupt(data, len(data) - 10, data[len(data) - 10] ^ 0x01, fix_crc=False)
    for cls in (lean.LeanPartitionRecords, Fetcher.PartitionRecords):
        with pytest.raises(CorruptRecordError, match="crc"):
            read(cls, bad)


@pytest.mark.parametrize("where", ["record length", "key length", "header count", "header key length", "trailing byte"])
def test_malformed_records_with_a_good_crc_are_refused_by_both(where):
    data = batch([(T0, b"key", b"value", []), (T0, b"key", b"value", [])])
    first = DefaultRecordBatch.HEADER_STRUCT.size
    if where == "record length":
        bad = corrupt(data, first, data[first] + 2, fix_crc=True)
    elif where == "key length":
        # length, attributes, timestamp delta, offset delta, then the key's length: 3 -> 60.
        bad = corrupt(data, first + 4, 120, fix_crc=True)
    elif where == "header count":
        # ... the key (3 bytes), the value's length and the value (5), then the header count: -1.
        bad = corrupt(data, first + 5 + 3 + 1 + 5, 1, fix_crc=True)
    elif where == "header key length":
        data = batch([(T0, b"key", b"value", [("h", b"1")]), (T0, b"key", b"value", [])])
        bad = corrupt(data, first + 5 + 3 + 1 + 5 + 1, 1, fix_crc=True)  # the first header's key: -1
    else:
        raw = bytearray(data + b"\x00")
        struct.pack_into(">i", raw, 8, len(raw) - 12)
        bad = corrupt(bytes(raw), 0, raw[0], fix_crc=True)
    handed_out = {}
    for cls in (lean.LeanPartitionRecords, Fetcher.PartitionRecords):
        partition = cls(0, TP, MemoryRecords(bad), check_crcs=True)
        got = []
        with pytest.raises(CorruptRecordError):
            got.extend(partition.take())  # kafka-python raises on the take after the good records
            got.extend(partition.take())
        handed_out[cls] = len(got)
    # The lean reader refuses the batch before handing out any of its records.
    assert handed_out[lean.LeanPartitionRecords] == 0
    assert handed_out[Fetcher.PartitionRecords] == (2 if where == "trailing byte" else 0)


def test_install_sets_the_reader_of_that_consumer_only_and_may_run_twice(caplog):
    class Consumer:
        def __init__(self) -> None:
            self._fetcher = object.__new__(Fetcher)  # the fetcher's type is what install checks

    consumer, other = Consumer(), Consumer()
    with caplog.at_level(logging.WARNING, logger="polling.patches.kafka_records"):
        assert lean.install(consumer) is True
        assert lean.install(consumer) is True
    assert consumer._fetcher.PartitionRecords is lean.LeanPartitionRecords
    assert other._fetcher.PartitionRecords is Fetcher.PartitionRecords
    assert caplog.text == ""


def test_install_refuses_a_consumer_it_does_not_know(caplog):
    class NotAConsumer:
        _fetcher = object()

    with caplog.at_level(logging.WARNING, logger="polling.patches.kafka_records"):
        assert lean.install(NotAConsumer()) is False
    assert "read by kafka-python" in caplog.text


def test_the_worker_s_consumer_reads_the_broker_s_fetches_as_kafka_python_does(kafka_topic):
    """On the real broker: votes sent as the web sends them, and records of odd shapes,
    read through the worker's consumer and through a plain kafka-python one."""
    values = vote_values(500)
    producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BROKERS, linger_ms=20)
    try:
        for value in values:
            producer.send(kafka_topic, key=b"7", value=value)
        producer.send(kafka_topic, key=None, value=b"x" * 10_000, headers=[("h", b"1"), ("empty", b"")])
        producer.send(kafka_topic, key=b"7", value=None)
        producer.flush()
    finally:
        producer.close()

    def read_all(consumer) -> list:
        try:
            wait_until(lambda: consumer.partitions_for_topic(kafka_topic), timeout=15, what="the topic's partitions")
            partitions = [TopicPartition(kafka_topic, p) for p in consumer.partitions_for_topic(kafka_topic)]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            got = []
            wait_until(
                lambda: got.extend(r for rs in consumer.poll(timeout_ms=200).values() for r in rs) or len(got) >= 502,
                timeout=20,
                what="502 records",
            )
            return sorted(got, key=lambda r: (r.partition, r.offset))
        finally:
            consumer.close()

    ours_consumer = vote_consumer(group_id=f"lean-{kafka_topic}", max_records=64)
    reader = ours_consumer._fetcher.PartitionRecords
    ours = read_all(ours_consumer)
    assert reader is lean.LeanPartitionRecords
    theirs = read_all(
        KafkaConsumer(
            bootstrap_servers=settings.KAFKA_BROKERS, enable_auto_commit=False, group_id=None, max_poll_records=64
        )
    )
    assert ours == theirs
    assert sorted(r.value for r in ours if r.key == b"7" and r.value) == sorted(values)
    assert [r.headers for r in ours if r.key is None] == [[("h", b"1"), ("empty", b"")]]
