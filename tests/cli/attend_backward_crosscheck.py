#!/usr/bin/env python3
"""Cross-checks `attnkit attend --grad-out` against gradients of softmax attention derived
and computed here in plain Python (no numpy, no autograd): the chain rule written out per
row (P, dP = dO . V, dS = P (dP - sum P dP)), with its own masks (causal bottom-right,
sliding window, GQA head mapping, learned sink logits). The formulas themselves are
checked against central finite differences of this file's own forward on a few entries.
Usage: attend_backward_crosscheck.py ATTNKIT_BINARY WORKDIR"""
import math
import os
import random
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attend_crosscheck import load_npy, save_npy  # noqa: E402


def rows(shape, sinks):
    """Yields (b, h, hk, i) for every query row."""
    B, Hq, Hkv, Nq = shape[:4]
    for b in range(B):
        for h in range(Hq):
            for i in range(Nq):
                yield b, h, h // (Hq // Hkv), i


def row_probs(q, k, shape, allowed, sinks, b, h, hk, i):
    """(keys, P) of one row; with a sink logit the sum gains e^z (a key of value 0)."""
    B, Hq, Hkv, Nq, Nk, D, Dv = shape
    scale = 1.0 / math.sqrt(D)
    qi = q[((b * Hq + h) * Nq + i) * D:][:D]
    scores = [(j, scale * sum(a * c for a, c in zip(qi, k[((b * Hkv + hk) * Nk + j) * D:][:D])))
              for j in range(Nk) if allowed(i, j)]
    if not scores:
        return [], []
    m = max([s for _, s in scores] + ([sinks[h]] if sinks else []))
    z = sum(math.exp(s - m) for _, s in scores) + (math.exp(sinks[h] - m) if sinks else 0.0)
    return [j for j, _ in scores], [math.exp(s - m) / z for _, s in scores]


def forward(q, k, v, shape, allowed, sinks):
    B, Hq, Hkv, Nq, Nk, D, Dv = shape
    out = []
    for b, h, hk, i in rows(shape, sinks):
        keys, probs = row_probs(q, k, shape, allowed, sinks, b, h, hk, i)
        row = [0.0] * Dv
        for j, p in zip(keys, probs):
            row = [r + p * x for r, x in zip(row, v[((b * Hkv + hk) * Nk + j) * Dv:][:Dv])]
        out.extend(row)
    return out


def gradients(q, k, v, do, shape, allowed, sinks):
    B, Hq, Hkv, Nq, Nk, D, Dv = shape
    scale = 1.0 / math.sqrt(D)
    dq, dk, dv = [0.0] * len(q), [0.0] * len(k), [0.0] * len(v)
    dsink = [0.0] * Hq
    for b, h, hk, i in rows(shape, sinks):
        keys, probs = row_probs(q, k, shape, allowed, sinks, b, h, hk, i)
        qrow, dorow = ((b * Hq + h) * Nq + i) * D, ((b * Hq + h) * Nq + i) * Dv
        dps = [sum(do[dorow + c] * v[((b * Hkv + hk) * Nk + j) * Dv + c] for c in range(Dv)) for j in keys]
        d = sum(p * dp for p, dp in zip(probs, dps))
        if sinks and keys:
            dsink[h] -= (1.0 - sum(probs)) * d  # the sink's probability times (0 - D)
        for j, p, dp in zip(keys, probs, dps):
            ds = p * (dp - d)
            krow, vrow = ((b * Hkv + hk) * Nk + j) * D, ((b * Hkv + hk) * Nk + j) * Dv
            for c in range(D):
                dq[qrow + c] += scale * ds * k[krow + c]
                dk[krow + c] += scale * ds * q[qrow + c]
            for c in range(Dv):
                dv[vrow + c] += p * do[dorow + c]
    return dq, dk, dv, dsink


def loss(q, k, v, do, shape, allowed, sinks):
    return sum(a * b for a, b in zip(forward(q, k, v, shape, allowed, sinks), do))


def check_formulas(rng):
    """Central differences of this file's forward agree with its gradient formulas."""
    shape = (1, 4, 2, 5, 7, 3, 2)
    allowed = lambda i, j: i + 2 - 3 <= j <= i + 2  # window:3,0 at Nq = 5, Nk = 7
    sinks = [0.3, -0.5, 1.0, 0.0]
    q, k = ([rng.uniform(-1, 1) for _ in range(n)] for n in (4 * 5 * 3, 2 * 7 * 3))
    v, do = ([rng.uniform(-1, 1) for _ in range(n)] for n in (2 * 7 * 2, 4 * 5 * 2))
    grads = gradients(q, k, v, do, shape, allowed, sinks)
    worst, h = 0.0, 1e-6
    for t, g in zip((q, k, v, sinks), grads):
        for idx in rng.sample(range(len(t)), min(6, len(t))):
            x = t[idx]
            t[idx] = x + h
            up = loss(q, k, v, do, shape, allowed, sinks)
            t[idx] = x - h
            down = loss(q, k, v, do, shape, allowed, sinks)
            t[idx] = x
            worst = max(worst, abs((up - down) / (2 * h) - g[idx]))
    print(f"formulas vs finite differences: max|diff| = {worst:.2e} (bound 1e-7)")
    return worst <= 1e-7


def f32(values):
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in values]


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = random.Random(4321)
    failed = 0 if check_formulas(rng) else 1
    cases = [
        # (name, B, Hq, Hkv, Nq, Nk, D, Dv, pattern, allowed(i, j, Nq, Nk), sinks)
        ("causal", 1, 2, 2, 19, 19, 8, 8, "causal", lambda i, j, nq, nk: j <= i + nk - nq, False),
        ("causal q<k bottom-right", 1, 2, 2, 5, 23, 8, 8, "causal", lambda i, j, nq, nk: j <= i + nk - nq, False),
        ("sliding window 6", 1, 2, 2, 29, 29, 8, 8, "window:6,0",
         lambda i, j, nq, nk: i + nk - nq - 6 <= j <= i + nk - nq, False),
        ("GQA 8/2 causal", 1, 8, 2, 13, 13, 16, 16, "causal", lambda i, j, nq, nk: j <= i + nk - nq, False),
        ("GQA window, d_qk != d_v", 2, 6, 3, 21, 21, 12, 5, "window:4,0",
         lambda i, j, nq, nk: i + nk - nq - 4 <= j <= i + nk - nq, False),
        ("MQA causal, sink logits", 1, 4, 1, 11, 15, 8, 8, "causal", lambda i, j, nq, nk: j <= i + nk - nq, True),
    ]
    worst = 0.0
    for name, B, Hq, Hkv, Nq, Nk, D, Dv, pattern, allowed, with_sinks in cases:
        shape = (B, Hq, Hkv, Nq, Nk, D, Dv)
        q, k = f32(rng.uniform(-2, 2) for _ in range(B * Hq * Nq * D)), f32(rng.uniform(-2, 2) for _ in range(B * Hkv * Nk * D))
        v, do = f32(rng.uniform(-1, 1) for _ in range(B * Hkv * Nk * Dv)), f32(rng.uniform(-1, 1) for _ in range(B * Hq * Nq * Dv))
        sinks = f32(rng.uniform(-1, 2) for _ in range(Hq)) if with_sinks else []
        paths = {n: os.path.join(work, f"{n}.npy") for n in ("q", "k", "v", "o", "do", "dq", "dk", "dv", "dsink")}
        for n, shp, t in (("q", (B, Hq, Nq, D), q), ("k", (B, Hkv, Nk, D), k), ("v", (B, Hkv, Nk, Dv), v),
                          ("do", (B, Hq, Nq, Dv), do)):
            save_npy(paths[n], shp, t)
        want = gradients(q, k, v, do, shape, lambda i, j: allowed(i, j, Nq, Nk), sinks)
        for kernel in ("ref", "auto"):
            cmd = [binary, "attend", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--out", paths["o"],
                   "--pattern", pattern, "--kernel", kernel, "--grad-out", paths["do"], "--dq", paths["dq"],
                   "--dk", paths["dk"], "--dv", paths["dv"]]
            if with_sinks:
                cmd += ["--sink-logits", ",".join(repr(z) for z in sinks), "--dsink", paths["dsink"]]
            subprocess.run(cmd, check=True, capture_output=True)
            names = ("dq", "dk", "dv", "dsink") if with_sinks else ("dq", "dk", "dv")
            ok = True
            for n, w in zip(names, want):
                got = load_npy(paths[n])
                scale = max(1.0, max(abs(x) for x in w))
                err = max(abs(a - b) for a, b in zip(got, w)) / scale
                ok &= len(got) == len(w) and err <= 2e-6
                worst = max(worst, err)
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name:<26} kernel={kernel:<4}")
    print(f"worst max|diff| / max(1, max|grad|) = {worst:.2e} (bound 2e-6)")
    print(f"{2 * len(cases) + 1 - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
