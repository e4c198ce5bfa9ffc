#!/usr/bin/env python3
"""Writes the seed corpus for fuzz/npy_fuzz.cpp into fuzz/corpus/npy/ (or the directory
given as the first argument): a few small valid .npy files of every supported dtype and
version, and near-misses of each rejected case, so the fuzzer starts inside the header
grammar. Bytes are built by hand with struct; numpy is not needed. Not for: tests, which
build their own inputs in tests/io/npy_test.cpp.
Run it again only to change the seeds; the output is committed."""
import os
import struct
import sys

MAGIC = b"\x93NUMPY"


def npy(header, data=b"", major=1, pad=True):
    """magic, version major.0, header length, header text (padded numpy-style to 64), data."""
    text = header.encode("utf-8")
    len_bytes = 2 if major == 1 else 4
    if pad:
        unpadded = len(MAGIC) + 2 + len_bytes + len(text) + 1
        text += b" " * (-unpadded % 64) + b"\n"
    length = struct.pack("<H" if major == 1 else "<I", len(text))
    return MAGIC + bytes([major, 0]) + length + text + data


def dict_text(descr="<f4", fortran="False", shape="(2, 3)"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


F4_6 = struct.pack("<6f", 1.5, -2.0, 0.25, 8.0, 0.0, -0.0)
F8_6 = struct.pack("<6d", 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
F2_6 = struct.pack("<6H", 0x3C00, 0xC000, 0x3800, 0x0000, 0x7BFF, 0x7C00)

SEEDS = {
    # Valid.
    "valid_f4_2x3_v1.npy": npy(dict_text(), F4_6),
    "valid_f8_6_v2.npy": npy(dict_text("<f8", shape="(6,)"), F8_6, major=2),
    "valid_f2_1x2x3_v3.npy": npy(dict_text("<f2", shape="(1, 2, 3)"), F2_6, major=3),
    "valid_f4_rank4.npy": npy(dict_text(shape="(1, 2, 1, 3)"), F4_6),
    "valid_f4_empty.npy": npy(dict_text(shape="(0, 4)")),
    "valid_reordered_unpadded.npy": npy("{\"shape\": (3L, 2L), \"descr\": \"=f8\", \"fortran_order\": False}",
                                        F8_6, pad=False),
    "valid_native_f2.npy": npy("{'descr':'|f2','fortran_order':False,'shape':(6,)}", F2_6, pad=False),
    # Invalid, one constraint each.
    "bad_magic.npy": b"\x93NUMPZ\x01\x00\x10\x00" + b"{}" + b" " * 14,
    "bad_version.npy": npy(dict_text(), F4_6, major=4),
    "bad_header_len.npy": MAGIC + b"\x01\x00\xff\xff" + dict_text().encode(),
    "bad_missing_shape.npy": npy("{'descr': '<f4', 'fortran_order': False}", F4_6),
    "bad_descr_i4.npy": npy(dict_text("<i4"), F4_6),
    "bad_big_endian.npy": npy(dict_text(">f4"), F4_6),
    "bad_fortran.npy": npy(dict_text(fortran="True"), F4_6),
    "bad_overflow.npy": npy(dict_text(shape="(1099511627776, 1099511627776)")),
    "bad_negative.npy": npy(dict_text(shape="(2, -3)"), F4_6),
    "bad_truncated.npy": npy(dict_text(shape="(4, 8, 16, 64)"), F4_6),
    "bad_trailing.npy": npy(dict_text(), F4_6 + b"junk"),
    "bad_rank0.npy": npy(dict_text(shape="()"), F4_6[:4]),
    "bad_rank5.npy": npy(dict_text(shape="(1, 1, 2, 1, 3)"), F4_6),
    "bad_zero_dim_overflow.npy": npy(dict_text(shape="(0, 1099511627776, 1099511627776)")),
    "bad_many_dims.npy": npy(dict_text(shape="(%s)" % ", ".join(["1"] * 300)), F4_6, major=2),
    "bad_structured.npy": npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", F4_6),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "npy")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
