#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_batch_decode: a few valid Kafka
RecordBatch v2 batches (uncompressed, gzip, and zstd when the zstd command
is installed), built independently of the C encoder. Run from anywhere:
    python3 tests/fuzz/gen_corpus.py
"""
import gzip
import os
import shutil
import struct
import subprocess

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "batch_decode")


def crc32c(data):
    c = 0xFFFFFFFF
    for x in data:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def varint(v):
    z = (v << 1) ^ (v >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def blob(b):
    return varint(-1) if b is None else varint(len(b)) + b


def record(i, ts_delta, key, value, headers):
    body = b"\x00" + varint(ts_delta) + varint(i) + blob(key) + blob(value)
    body += varint(len(headers))
    for hk, hv in headers:
        body += blob(hk) + blob(hv)
    return varint(len(body)) + body


def batch(base_offset, base_ts, recs, compression=0):
    raw = b"".join(record(i, *r) for i, r in enumerate(recs))
    if compression == 1:
        raw = gzip.compress(raw)
    elif compression == 4:
        raw = subprocess.run(["zstd", "-q", "-c"], input=raw, check=True,
                             stdout=subprocess.PIPE).stdout
    max_ts = base_ts + max(r[0] for r in recs)
    after = struct.pack(">hiqqqhii", compression, len(recs) - 1, base_ts, max_ts, -1, -1, -1,
                        len(recs)) + raw
    crc = crc32c(after)
    body = struct.pack(">ibI", -1, 2, crc) + after
    return struct.pack(">qi", base_offset, len(body)) + body


def main():
    os.makedirs(OUT, exist_ok=True)
    small = [(0, b"k1", b"hello", [(b"h", b"v")]),
             (300, None, b"world", [(b"a", None), (b"bb", b"xyz")]),
             (7, b"", None, [])]
    many = [(i % 50, b"host-%d" % (i % 3), b"line %d of the log" % i,
             [(b"src", b"/var/log/x")] * (i % 4)) for i in range(40)]
    seeds = {
        "small_none": batch(100, 1700000000000, small),
        "small_gzip": batch(0, 1700000000000, small, 1),
        "many_none": batch(5, 1600000000000, many),
        "many_gzip": batch(5, 1600000000000, many, 1),
    }
    if shutil.which("zstd"):
        seeds["small_zstd"] = batch(100, 1700000000000, small, 4)
        seeds["many_zstd"] = batch(5, 1600000000000, many, 4)
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
