#!/usr/bin/env python3
"""Small GGUF seeds for the gguf_reader fuzz target, made from real model files.

For each GGUF given, writes `<out>/<stem>.head.gguf` (its first 64 KiB) and
`<out>/<stem>.small.gguf`: the same metadata with long arrays cut to a few entries
(a small but consistent vocabulary) and a few tiny F32/Q8_0 tensors, so every reader
stage (facts, decoder spec, tokenizer, tensor reads) runs on the seed.

usage: gguf_seeds.py OUT_DIR FILE.gguf...
"""
import os
import struct
import sys

KEEP = 48  # array entries kept (tokens, merges, token types, ...)
FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(FMT[t])


def write_value(out, t, v):
    if t == 8:
        out += struct.pack("<Q", len(v)) + v
    elif t == 9:
        et, items = v
        out += struct.pack("<IQ", et, len(items))
        for item in items:
            write_value(out, et, item)
    else:
        out += struct.pack(FMT[t], v)


def small(data):
    r = Reader(data)
    assert r.take("<I") == 0x46554747, "not a GGUF file"
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    kvs = []
    for _ in range(n_kv):
        key, t = r.string(), r.take("<I")
        v = r.value(t)
        if t == 9:
            v = (v[0], v[1][:KEEP])
        if key == b"tokenizer.chat_template":
            v = v[:4096]
        kvs.append((key, t, v))
    out = bytearray(struct.pack("<IIQQ", 0x46554747, version, 3, len(kvs)))
    for key, t, v in kvs:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", t)
        write_value(out, t, v)
    # token_embd [KEEP x 32] f32, output_norm [32] f32, one Q8_0 matrix [2 x 32].
    tensors = [(b"token_embd.weight", [32, KEEP], 0, 4 * 32 * KEEP), (b"output_norm.weight", [32], 0, 128), (b"blk.0.attn_q.weight", [32, 2], 8, 2 * 34)]
    offset = 0
    for name, dims, dtype, size in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", dtype, offset)
        offset += (size + 31) // 32 * 32
    out += b"\0" * (-len(out) % 32)
    blob = bytearray(offset)
    for i in range(0, 4 * 32 * KEEP, 4):
        blob[i : i + 4] = struct.pack("<f", ((i * 7919) % 97 - 48) / 64)
    return bytes(out + blob)


def main():
    out_dir, files = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    for path in files:
        data = open(path, "rb").read(64 << 20)
        stem = os.path.basename(path).removesuffix(".gguf")
        open(os.path.join(out_dir, stem + ".head.gguf"), "wb").write(data[: 64 << 10])
        open(os.path.join(out_dir, stem + ".small.gguf"), "wb").write(small(data))


if __name__ == "__main__":
    main()
