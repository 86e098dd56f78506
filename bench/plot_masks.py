#!/usr/bin/python3
"""Plot the mask-strategy benchmarks of attnkit_bench.

    attnkit_bench --benchmark_filter=masks --benchmark_format=json > masks.json
    python3 bench/plot_masks.py masks.json [bench/mask_strategies.png] [--note "text"]

One panel per mask, wall time per call (log) against N (log), one line per
strategy: dense (materialised additive mask inside the fused kernel),
functor_all_tiles (functor mask, every tile visited), functor_skip (functor
mask with tile skipping) and eigen (materialised Eigen baseline, N <= 4096).
With --benchmark_repetitions the median aggregate is used; without, the median
of the runs of each benchmark.
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STRATEGIES = [
    ("dense", "dense additive mask (fused kernel)", "tab:red", "s"),
    ("functor_all_tiles", "functor, every tile", "tab:orange", "^"),
    ("functor_skip", "functor + tile skipping", "tab:green", "o"),
    ("eigen", "Eigen, materialised", "tab:blue", "D"),
]
MASKS = [
    ("causal", "causal"),
    ("window512", "sliding window W=512"),
    ("prefix_lm", "prefix-LM P=N/4"),
    ("document", "document (4 docs) & causal"),
    ("sink_window", "sinks S=4 + window W=512"),
]
TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def load(path):
    with open(path) as f:
        data = json.load(f)
    runs = defaultdict(list)  # (mask, strategy, N) -> [ms]
    medians = {}
    for b in data.get("benchmarks", []):
        parts = b.get("run_name", b["name"]).split("/")
        if len(parts) < 4 or parts[0] != "masks":
            continue
        if b.get("error_occurred"):
            continue
        try:
            key = (parts[1], parts[2], int(parts[3]))
        except ValueError:
            continue
        ms = b["real_time"] * TO_MS[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[key] = ms
        else:
            runs[key].append(ms)
    for key, v in runs.items():
        medians.setdefault(key, statistics.median(v))
    return medians


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="attnkit_bench --benchmark_format=json output")
    ap.add_argument("png", nargs="?", default="bench/mask_strategies.png")
    ap.add_argument("--note", default="", help="extra line under the panel legend (run conditions)")
    args = ap.parse_args()
    out = args.png
    t = load(args.json)
    if not t:
        sys.exit("no masks/<mask>/<strategy>/<N> benchmarks in " + args.json)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    axes = axes.ravel()
    for ax, (mask, title) in zip(axes, MASKS):
        for strat, label, color, marker in STRATEGIES:
            pts = sorted((n, ms) for (m, s, n), ms in t.items() if m == mask and s == strat)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=label)
        ax.set_xscale("log", base=2)
        ns = sorted({n for (m, _, n) in t if m == mask})
        if ns:
            ax.set_xticks(ns)
            ax.set_xticklabels([str(n) for n in ns])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("N (Sq = Sk)")
        ax.set_ylabel("time per call [ms]")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes[: len(MASKS)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    order = [s[1] for s in STRATEGIES]
    pairs = sorted(zip(handles, labels), key=lambda hl: order.index(hl[1]))
    handles, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    axes[-1].axis("off")
    axes[-1].legend(handles, labels, loc="center", fontsize=12)
    axes[-1].text(
        0.5,
        0.05,
        "B=1, Hq=8, Hkv=2, D=128, fp32, 2 threads\nmedian wall time per call" + ("\n" + args.note if args.note else ""),
        ha="center",
        transform=axes[-1].transAxes,
    )
    fig.suptitle("attnkit CPU: mask strategies")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
