#!/usr/bin/env python3
"""Plots of the trade-off report: reads the results.json that `attnkit report` writes and
draws its PNGs into the output folder. Needs Debian's python3-matplotlib.

usage: plot_report.py RESULTS_JSON OUT_DIR
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def save(fig, out, name):
    path = os.path.join(out, name)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)  # whole or not at all


def val_loss(r, out):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in r["variants"]:
        pts = [(s, val) for s, _, val in v["train"]["curve"] if val is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=v["label"])
    ax.axhline(r["unigram_entropy"], color="grey", ls=":", label="unigram entropy")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("Validation loss per variant (same data, same token budget)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save(fig, out, "val_loss.png")


def pareto(r, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"f32": "o", "bf16": "s", "f16": "D", "int8": "^", "int4": "v"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pts = []
    shown = [v for v in r["variants"] if v["group"] != "probe" and v["name"] != "mha-seed2"]
    for i, v in enumerate(shown):
        for c in v["caches"]:
            x = c["speed_and_memory"]["kv_bytes_per_token_at_context"]
            y = c["perplexity"]["ppl"]
            pts.append((x, y))
            rolling = c["cache"].startswith("rolling")
            ax.scatter([x], [y], s=42 if rolling else 30, marker=markers[c["kv_dtype"]],
                       facecolors="none" if rolling else colors[i % len(colors)],
                       edgecolors=colors[i % len(colors)], linewidths=1.3)
    front, best = [], math.inf
    for x, y in sorted(pts):
        if y < best:
            front.append((x, y))
            best = y
    ax.plot([p[0] for p in front], [p[1] for p in front], color="black", lw=1, ls="--")
    handles = [plt.Line2D([], [], color=colors[i % len(colors)], marker="o", ls="", label=v["label"])
               for i, v in enumerate(shown)]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=k) for k, m in markers.items()]
    handles += [plt.Line2D([], [], color="grey", marker="o", mfc="none", ls="", label="rolling cache (hollow)"),
                plt.Line2D([], [], color="black", ls="--", label="Pareto front")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xscale("log")
    ax.set_xlabel(f'KV bytes per token held at context {r["model"]["context"]} (all layers, log scale)')
    ax.set_ylabel("test perplexity (bytes)")
    ax.set_title("Perplexity against KV-cache memory: every variant x cache kind")
    ax.grid(alpha=0.3, which="both")
    save(fig, out, "pareto.png")


def passkey(r, out):
    vs = [v for v in r["variants"] if v["passkey"] and v["name"] != "mha-seed2"]
    reach_l = next((v["reach"] for v in vs if v["name"] == "window"), 0)
    reach_1 = next((v["reach"] for v in vs if v["name"] == "window-1layer"), 0)
    cols = 3
    rows = math.ceil(len(vs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, v in zip(axes.flat, vs):
        lengths = sorted({c["length"] for c in v["passkey"]})
        depths = sorted({c["depth"] for c in v["passkey"]})
        grid = [[0.0] * len(lengths) for _ in depths]
        dist = [[0.0] * len(lengths) for _ in depths]
        for c in v["passkey"]:
            i, j = depths.index(c["depth"]), lengths.index(c["length"])
            grid[i][j] = c["accuracy"]
            dist[i][j] = c["mean_distance"]
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        reach = v["reach"] or (reach_1 if v["layers"] == 1 else reach_l)
        for i in range(len(depths)):
            for j in range(len(lengths)):
                ax.text(j, i, f"{100 * grid[i][j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i][j] < 0.5 else "black")
                if reach and dist[i][j] > reach:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", ls="--", lw=1))
        ax.set_xticks(range(len(lengths)), [str(x) for x in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=7)
        ax.set_xlabel("sample length (bytes)", fontsize=8)
        ax.set_ylabel("needle depth", fontsize=8)
        marked = f"L·w = {reach}" + ("" if v["reach"] else " (of the window model)")
        ax.set_title(f'{v["label"]}\n{marked}', fontsize=8)
    for ax in list(axes.flat)[len(vs):]:
        ax.axis("off")
    fig.suptitle("Pass-key accuracy (%), red dashes: key farther than L·w from the answer", fontsize=10)
    fig.tight_layout()
    save(fig, out, "passkey.png")


def loglog(out, name, lines, xlabel, ylabel, title, ybase=10):
    """Lines of (label, xs, ys) on log-log axes (x in powers of two)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, xs, ys, marker in lines:
        ax.plot(xs, ys, marker=marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=ybase)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    save(fig, out, name)


def attention_time(r, out):
    def what(t):
        method = t.get("method", "softmax")
        return t["pattern"] if method == "softmax" else method
    lines = [(f'{t["label"]} ({what(t)})', [p["n"] for p in t["points"]], [p["ms"] for p in t["points"]],
              "o" if t.get("method", "softmax") == "softmax" else "s") for t in r["timing"]]
    loglog(out, "attention_time.png", lines, "context n (tokens)", "attention forward + backward (ms)",
           "One attention layer's training step against context")


def performer_error(r, out):
    a = r.get("approximation")
    if not a:
        return
    pf = a["performer"]
    ms = [p["m"] for p in pf]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(ms, [p["mean"] for p in pf], yerr=[p["std"] for p in pf], marker="o", capsize=3,
                label=f'Performer, mean ± std over {pf[0]["seeds"]} feature draws')
    c = pf[0]["mean"] * math.sqrt(ms[0])
    ax.plot(ms, [c / math.sqrt(m) for m in ms], ls="--", color="grey", label="1 / sqrt(m)")
    for d in a["distances"]:
        if not d["method"].startswith("performer"):
            ax.axhline(d["relative_error"], ls=":", label=f'{d["method"]} (another function)', color="C3" if d["method"] == "linear" else "C2")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("random features m")
    ax.set_ylabel("relative error of O against softmax attention")
    ax.set_title(f'Distance from exact causal softmax attention (n = {a["n"]}, d = {a["head_dim"]})')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    save(fig, out, "performer_error.png")


def kv_bytes(r, out):
    lines = [(d["label"], [p[0] for p in d["points"]], [p[1] for p in d["points"]], ".") for d in r["kv_designs"]]
    loglog(out, "kv_bytes.png", lines, "context (tokens)", "KV-cache bytes, all layers, one sequence",
           "KV memory against context per cache design (kv-size's formulas)", ybase=2)


def streams(r, out):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    smooth = 16
    for v in r["variants"]:
        for s in v["streams"]:
            nll = s["nll"]
            xs, ys = [], []
            for i in range(0, len(nll) - smooth + 1, smooth // 2):
                xs.append(i + 1 + smooth / 2)
                ys.append(math.exp(sum(nll[i:i + smooth]) / smooth))
            ax.plot(xs, ys, label=f'{v["label"]}: {s["cache"]}')
    w = r["model"]["context"] // 8
    ax.axvline(w, color="grey", ls=":", label=f"window w = {w}")
    ax.set_xlabel("position in the stream")
    ax.set_ylabel(f"perplexity (mean over streams, {smooth}-token bins)")
    ax.set_title("Rolling caches along a stream: with and without attention sinks")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, out, "stream.png")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        r = json.load(f)
    out = sys.argv[2]
    for plot in (val_loss, pareto, passkey, attention_time, performer_error, kv_bytes, streams):
        plot(r, out)


if __name__ == "__main__":
    main()
