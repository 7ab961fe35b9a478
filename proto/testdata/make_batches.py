"""Writes the golden compressed batches in this directory with kafka-python's own batch
builder, as a Kafka client sends them. Run once; the outputs are committed:

    python3 -m venv /tmp/compression-venv
    /tmp/compression-venv/bin/pip install kafka-python lz4 python-snappy zstandard
    /tmp/compression-venv/bin/python proto/testdata/make_batches.py proto/testdata

Each batch holds RECORDS below; proto/src/batch/tests.rs checks the decoded records.
"""
import struct
import sys

import kafka
import snappy
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

RECORDS = [
    (1_700_000_000_000 + i, f"key-{i}".encode(), (f"value-{i} " + "tidelog " * 8).encode(),
     [("h", f"{i}".encode())] if i % 2 == 0 else [])
    for i in range(5)
]
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
HEADER_BYTES = 61


def build(codec_id):
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=codec_id, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for offset, (timestamp, key, value, headers) in enumerate(RECORDS):
        builder.append(offset, timestamp, key, value, headers)
    return bytes(builder.build())


def raw_snappy():
    """The records as one raw snappy block (librdkafka's form): kafka-python writes xerial."""
    plain = build(0)
    records = snappy.compress(plain[HEADER_BYTES:])
    batch = bytearray(plain[:HEADER_BYTES] + records)
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    attributes = struct.unpack_from(">h", batch, 21)[0] | 2
    struct.pack_into(">h", batch, 21, attributes)
    struct.pack_into(">I", batch, 17, calc_crc32c(bytes(batch[21:])))
    return bytes(batch)


def main(out_dir):
    print("kafka-python", kafka.__version__)
    for name, codec_id in CODECS.items():
        batch = build(codec_id)
        assert struct.unpack_from(">h", batch, 21)[0] & 7 == codec_id, f"{name}: not compressed"
        with open(f"{out_dir}/kafka-python-{name}.batch", "wb") as out:
            out.write(batch)
    with open(f"{out_dir}/raw-snappy.batch", "wb") as out:
        out.write(raw_snappy())


if __name__ == "__main__":
    main(sys.argv[1])
