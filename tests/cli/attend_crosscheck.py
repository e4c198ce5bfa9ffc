#!/usr/bin/env python3
"""Cross-checks `attnkit attend` against an independent softmax attention written here in
plain Python (no numpy): its own .npy writer and reader, its own masks (causal bottom-right,
sliding window, GQA head mapping). Usage: attend_crosscheck.py ATTNKIT_BINARY WORKDIR"""
import math
import os
import random
import struct
import subprocess
import sys


def save_npy(path, shape, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % "".join(f"{s}, " for s in shape)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(struct.pack(f"<{len(values)}f", *values))


def load_npy(path):
    data = open(path, "rb").read()
    assert data[:6] == b"\x93NUMPY", path
    hlen = struct.unpack("<H", data[8:10])[0] if data[6] == 1 else struct.unpack("<I", data[8:12])[0]
    start = (10 if data[6] == 1 else 12) + hlen
    header = data[start - hlen:start].decode("latin1")
    assert "'<f4'" in header, header
    count = (len(data) - start) // 4
    return struct.unpack(f"<{count}f", data[start:])


def attention(q, k, v, shape, allowed):
    """q [B,Hq,Nq,D], k [B,Hkv,Nk,D], v [B,Hkv,Nk,Dv] as flat lists; returns flat O."""
    B, Hq, Hkv, Nq, Nk, D, Dv = shape
    scale = 1.0 / math.sqrt(D)
    out = []
    for b in range(B):
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            for i in range(Nq):
                qi = q[((b * Hq + h) * Nq + i) * D:][:D]
                scores = []
                for j in range(Nk):
                    if allowed(i, j):
                        kj = k[((b * Hkv + hk) * Nk + j) * D:][:D]
                        scores.append((j, scale * sum(a * c for a, c in zip(qi, kj))))
                m = max(s for _, s in scores)
                z = sum(math.exp(s - m) for _, s in scores)
                row = [0.0] * Dv
                for j, s in scores:
                    p = math.exp(s - m) / z
                    vj = v[((b * Hkv + hk) * Nk + j) * Dv:][:Dv]
                    row = [r + p * x for r, x in zip(row, vj)]
                out.extend(row)
    return out


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = random.Random(1234)
    cases = [
        # (name, B, Hq, Hkv, Nq, Nk, D, Dv, pattern, allowed(i, j, Nq, Nk))
        ("full MHA", 1, 2, 2, 17, 17, 16, 16, "none", lambda i, j, nq, nk: True),
        ("causal", 2, 2, 2, 19, 19, 8, 8, "causal", lambda i, j, nq, nk: j <= i + nk - nq),
        ("causal q<k bottom-right", 1, 2, 2, 5, 23, 8, 8, "causal", lambda i, j, nq, nk: j <= i + nk - nq),
        ("sliding window 6", 1, 2, 2, 29, 29, 8, 8, "window:6,0",
         lambda i, j, nq, nk: i + nk - nq - 6 <= j <= i + nk - nq),
        ("GQA 8/2 causal", 1, 8, 2, 13, 13, 16, 16, "causal", lambda i, j, nq, nk: j <= i + nk - nq),
        ("MQA d_qk != d_v", 1, 4, 1, 11, 15, 12, 5, "none", lambda i, j, nq, nk: True),
        ("GQA sliding window", 2, 6, 3, 21, 21, 8, 8, "window:4,0",
         lambda i, j, nq, nk: i + nk - nq - 4 <= j <= i + nk - nq),
    ]
    worst = 0.0
    failed = 0
    for name, B, Hq, Hkv, Nq, Nk, D, Dv, pattern, allowed in cases:
        q = [rng.uniform(-2, 2) for _ in range(B * Hq * Nq * D)]
        k = [rng.uniform(-2, 2) for _ in range(B * Hkv * Nk * D)]
        v = [rng.uniform(-1, 1) for _ in range(B * Hkv * Nk * Dv)]
        q, k, v = ([struct.unpack("<f", struct.pack("<f", x))[0] for x in t] for t in (q, k, v))  # exact f32
        paths = {n: os.path.join(work, f"{n}.npy") for n in ("q", "k", "v", "o")}
        save_npy(paths["q"], (B, Hq, Nq, D), q)
        save_npy(paths["k"], (B, Hkv, Nk, D), k)
        save_npy(paths["v"], (B, Hkv, Nk, Dv), v)
        for kernel in ("ref", "auto"):
            subprocess.run([binary, "attend", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--out",
                            paths["o"], "--pattern", pattern, "--kernel", kernel], check=True, capture_output=True)
            got = load_npy(paths["o"])
            want = attention(q, k, v, (B, Hq, Hkv, Nq, Nk, D, Dv), lambda i, j: allowed(i, j, Nq, Nk))
            err = max(abs(a - b) for a, b in zip(got, want))
            ok = len(got) == len(want) and err <= 1e-6
            failed += not ok
            worst = max(worst, err)
            print(f"{'ok  ' if ok else 'FAIL'} {name:<26} kernel={kernel:<4} max|diff|={err:.2e}")
    print(f"worst max|diff| = {worst:.2e} (bound 1e-6)")
    print(f"{2 * len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
