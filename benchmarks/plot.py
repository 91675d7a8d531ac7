"""Plots of the benchmark results: throughput against workers, latency against load.

    pip install 'bookstream[plot]'        # matplotlib (an optional dependency)
    python benchmarks/plot.py [benchmarks/results]

Reads every ``*.json`` that ``bookstream bench --out`` wrote into the results folder and
writes ``throughput.png`` (drain events/s by K, for the largest N measured, with the
redis-benchmark reference) and ``latency.png`` (p50/p99/p99.9 by offered rate, per K)
next to this script.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(folder: Path) -> list[dict[str, Any]]:
    results = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("correct"):
            results.append(data)
    return results


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(argv[1]) if len(argv) > 1 else HERE / "results"
    results = load(folder)
    # throughput runs only: memory runs shorten the workers' retention
    drains = [
        r for r in results if r["mode"] == "drain" and r.get("worker_retention_s", 86_400) == 86_400
    ]
    if drains:
        n = max(r["events"] for r in drains)
        by_k: dict[int, list[float]] = defaultdict(list)
        refs: list[float] = []
        for r in drains:
            if r["events"] == n:
                by_k[r["workers"]].append(r["events_per_s"])
                if "reference_ops_per_s" in r:
                    refs.append(r["reference_ops_per_s"])
        ks = sorted(by_k)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar([str(k) for k in ks], [max(by_k[k]) for k in ks], color="#3b75af")
        for k in ks:
            ax.annotate(f"{max(by_k[k]):,.0f}", (str(k), max(by_k[k])), ha="center", va="bottom")
        if refs:
            ax.axhline(max(refs), color="#c44e52", linestyle="--", label="redis-benchmark FCALL")
        # issue 4's targets: 25,000 with one worker of each service, 40,000 with two
        for k, target in ((1, 25_000), (2, 40_000)):
            if k in by_k:
                ax.plot([str(k)], [target], marker="_", markersize=40, color="#55a868")
        ax.plot([], [], marker="_", linestyle="none", color="#55a868", label="target")
        ax.legend(fontsize=8)
        first = drains[0]
        busy = max(r.get("loadavg_at_start", [0.0])[0] for r in drains)
        ax.set_title(
            f"drain, N={n:,}, {first['cores']} cores, Redis {first['redis_version']}, "
            f"load avg {busy:.1f}",
            fontsize=10,
        )
        ax.set_xlabel("workers of each service (K)")
        ax.set_ylabel("events/s")
        fig.tight_layout()
        fig.savefig(HERE / "throughput.png", dpi=120)
    lat = [r for r in results if r["mode"] == "latency" and r["latency_ms"]["p50"] is not None]
    if lat:
        fig, ax = plt.subplots(figsize=(6, 4))
        series: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in lat:
            series[r["workers"]].append(r)
        for k, runs in sorted(series.items()):
            runs.sort(key=lambda r: r["offered_rate"])
            rates = [r["offered_rate"] for r in runs]
            for name, style in (("p50", ":"), ("p99", "-"), ("p999", "--")):
                ax.plot(
                    rates,
                    [r["latency_ms"][name] for r in runs],
                    style,
                    marker="o",
                    label=f"K={k} {name}",
                )
        ax.axhline(10, color="grey", linewidth=0.8)  # targets at 5,000/s: p99 10 ms, p99.9 25
        ax.axhline(25, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xlabel("offered requests/s (open loop)")
        ax.set_ylabel("request -> outcome latency, ms")
        busy = max(r.get("loadavg_at_start", [0.0])[0] for r in lat)
        ax.set_title(f"latency against offered load (machine load avg up to {busy:.1f})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(HERE / "latency.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
