#!/usr/bin/env python3
"""Cross-checks `attnkit attend --method` against the textbook formulas written here in plain
Python (no numpy): linear attention with phi = elu + 1 (Katharopoulos et al.), retention's
parallel form (RetNet: decay mask gamma^(i-j), rows normalised by the square root of their
sum), Linformer (softmax over E K and F V), non-causal and causal, GQA, d_qk != d_v; and the
gradients --grad-out writes against central finite differences of these same formulas.
Usage: method_crosscheck.py ATTNKIT_BINARY WORKDIR"""
import math
import os
import random
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attend_crosscheck import load_npy, save_npy  # noqa: E402  (the same plain .npy codec)


def elu1(x):
    return x + 1.0 if x > 0 else math.exp(x)


def rows(t, heads, n, d):
    """A flat [heads, n, d] list as t[h][i] -> list of d."""
    return [[t[(h * n + i) * d:(h * n + i + 1) * d] for i in range(n)] for h in range(heads)]


def linear(q, k, v, s, causal, eps=1e-6):
    hq, hkv, n, d, dv = s
    Q, K, V = rows(q, hq, n, d), rows(k, hkv, n, d), rows(v, hkv, n, dv)
    out = []
    for h in range(hq):
        hk = h // (hq // hkv)
        for i in range(n):
            num, den = [0.0] * dv, eps
            for j in range(i + 1 if causal else n):
                w = sum(elu1(a) * elu1(b) for a, b in zip(Q[h][i], K[hk][j]))
                den += w
                num = [x + w * y for x, y in zip(num, V[hk][j])]
            out.extend(x / den for x in num)
    return out


def retention(q, k, v, s, causal, gammas):
    hq, hkv, n, d, dv = s
    Q, K, V = rows(q, hq, n, d), rows(k, hkv, n, d), rows(v, hkv, n, dv)
    out = []
    for h in range(hq):
        hk, g = h // (hq // hkv), gammas[h]
        for i in range(n):
            norm = math.sqrt(sum(g ** (i - j) for j in range(i + 1)))
            row = [0.0] * dv
            for j in range(i + 1):
                w = sum(a * b for a, b in zip(Q[h][i], K[hk][j])) / math.sqrt(d) * g ** (i - j) / norm
                row = [x + w * y for x, y in zip(row, V[hk][j])]
            out.extend(row)
    return out


def linformer(q, k, v, s, e, f, kp):
    """Headwise sharing: one E and one F, [kp, n] each."""
    hq, hkv, n, d, dv = s
    Q, K, V = rows(q, hq, n, d), rows(k, hkv, n, d), rows(v, hkv, n, dv)
    E, F = rows(e, 1, kp, n)[0], rows(f, 1, kp, n)[0]
    out = []
    for h in range(hq):
        hk = h // (hq // hkv)
        kk = [[sum(E[r][j] * K[hk][j][c] for j in range(n)) for c in range(d)] for r in range(kp)]
        vv = [[sum(F[r][j] * V[hk][j][c] for j in range(n)) for c in range(dv)] for r in range(kp)]
        for i in range(n):
            sc = [sum(a * b for a, b in zip(Q[h][i], kk[r])) / math.sqrt(d) for r in range(kp)]
            m = max(sc)
            p = [math.exp(x - m) for x in sc]
            z = sum(p)
            out.extend(sum(p[r] / z * vv[r][c] for r in range(kp)) for c in range(dv))
    return out


def f32(values):
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in values]


def finite_difference(fn, inputs, which, d_o, h=1e-4):
    """d sum(O * dO) / d inputs[which], by central differences in double."""
    grad = []
    for idx in range(len(inputs[which])):
        plus = [list(t) for t in inputs]
        minus = [list(t) for t in inputs]
        plus[which][idx] += h
        minus[which][idx] -= h
        lp = sum(a * b for a, b in zip(fn(*plus), d_o))
        lm = sum(a * b for a, b in zip(fn(*minus), d_o))
        grad.append((lp - lm) / (2 * h))
    return grad


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = random.Random(4321)
    hq, hkv, n, d, dv, kp = 4, 2, 7, 3, 5, 4
    s = (hq, hkv, n, d, dv)
    q, k, v = (f32([rng.uniform(-1, 1) for _ in range(c)]) for c in (hq * n * d, hkv * n * d, hkv * n * dv))
    e, f = (f32([rng.gauss(0, 0.5) for _ in range(kp * n)]) for _ in range(2))
    d_o = f32([rng.uniform(-1, 1) for _ in range(hq * n * dv)])
    p = {x: os.path.join(work, f"{x}.npy") for x in ("q", "k", "v", "e", "f", "do", "o", "dq", "dk", "dv", "de", "df")}
    save_npy(p["q"], (1, hq, n, d), q)
    save_npy(p["k"], (1, hkv, n, d), k)
    save_npy(p["v"], (1, hkv, n, dv), v)
    save_npy(p["e"], (1, kp, n), e)
    save_npy(p["f"], (1, kp, n), f)
    save_npy(p["do"], (1, hq, n, dv), d_o)
    default_gammas = [1 - 2 ** (-5 - h) for h in range(hq)]
    cases = [
        # (name, --method, --pattern, textbook O(q, k, v[, e, f]), extra flags, inputs)
        ("linear non-causal", "linear", "none", lambda q, k, v: linear(q, k, v, s, False), []),
        ("linear causal", "linear", "causal", lambda q, k, v: linear(q, k, v, s, True), []),
        ("retention default gammas", "retention", "causal", lambda q, k, v: retention(q, k, v, s, True, default_gammas), []),
        ("retention gamma=0.8", "retention:gamma=0.8", "causal", lambda q, k, v: retention(q, k, v, s, True, [0.8] * hq), []),
        ("linformer headwise", f"linformer:k={kp},sharing=headwise", "none",
         lambda q, k, v, e, f: linformer(q, k, v, s, e, f, kp), ["--e", p["e"], "--f", p["f"]]),
    ]
    failed = total = 0
    worst_fwd = worst_bwd = 0.0
    for name, method, pattern, fn, extra in cases:
        is_linformer = method.startswith("linformer")
        inputs = [q, k, v] + ([e, f] if is_linformer else [])
        grads = ["dq", "dk", "dv"] + (["de", "df"] if is_linformer else [])
        cmd = [binary, "attend", "--q", p["q"], "--k", p["k"], "--v", p["v"], "--out", p["o"], "--method", method,
               "--pattern", pattern, "--grad-out", p["do"]] + extra
        for g in grads:
            cmd += [f"--{g}", p[g]]
        for kernel in ("ref", "auto"):
            subprocess.run(cmd + ["--kernel", kernel], check=True, capture_output=True)
            want = fn(*inputs)
            got = load_npy(p["o"])
            err = max(abs(a - b) for a, b in zip(got, want)) / max(1.0, max(abs(x) for x in want))
            gerr = 0.0
            for which, g in enumerate(grads):
                fd = finite_difference(fn, inputs, which, d_o)
                mine = load_npy(p[g])
                gerr = max(gerr, max(abs(a - b) for a, b in zip(mine, fd)) / max(1.0, max(abs(x) for x in fd)))
            ok = len(got) == len(want) and err <= 1e-6 and gerr <= 1e-5
            failed += not ok
            total += 1
            worst_fwd, worst_bwd = max(worst_fwd, err), max(worst_bwd, gerr)
            print(f"{'ok  ' if ok else 'FAIL'} {name:<26} kernel={kernel:<4} O {err:.2e}  gradients {gerr:.2e}")
    print(f"worst relative max|diff|: O {worst_fwd:.2e} (bound 1e-6), gradients {worst_bwd:.2e} (bound 1e-5)")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
