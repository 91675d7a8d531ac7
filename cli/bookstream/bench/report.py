"""The run's result: one JSON object (``--json``, ``--out``) and a table for people."""

from __future__ import annotations

from typing import Any

from bookstream.bench.correctness import Verdict
from bookstream.bench.drain import RunFigures
from bookstream.bench.reference import Reference

MiB = 1024 * 1024
TOP_COMMANDS = 6


def build(
    *,
    mode: str,
    events: int,
    workers: int,
    seed: int,
    figures: RunFigures,
    latency_ms: dict[str, float | None],
    verdict: Verdict,
    problems: list[str],
    server: dict[str, Any],
    reference: Reference | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    seconds = figures.seconds
    events_per_s = events / seconds if seconds > 0 else 0.0
    worker_cpu = sum(figures.worker_cpu_s.values())
    stats = sorted(figures.commandstats.items(), key=lambda kv: -kv[1].get("usec", 0.0))
    result: dict[str, Any] = {
        "mode": mode,
        "events": events,
        "workers": workers,
        "seed": seed,
        "seconds": round(seconds, 3),
        "events_per_s": round(events_per_s, 1),
        "latency_ms": latency_ms,
        "audit_ok": verdict.audit_ok,
        "correct": verdict.ok and not problems,
        "violations": verdict.violations + problems,
        "notes": verdict.notes,
        "outcomes": verdict.outcomes,
        "dead_letters": verdict.dead_letters,
        **server,
        "memory": {
            "used_memory_before": figures.memory_before,
            "used_memory_loaded": figures.memory_loaded,
            "used_memory_after": figures.memory_after,
        },
        "worker_rss_bytes": {s: [rss for rss, _ in v] for s, v in figures.worker_rss.items()},
        "worker_peak_rss_bytes": {s: [hwm for _, hwm in v] for s, v in figures.worker_rss.items()},
        "cpu": {
            "redis_s": round(figures.redis_cpu_s, 3),
            "lending_s": round(figures.worker_cpu_s.get("lending", 0.0), 3),
            "shelving_s": round(figures.worker_cpu_s.get("shelving", 0.0), 3),
            "redis_cores": round(figures.redis_cpu_s / seconds, 3) if seconds else None,
            "workers_cores": round(worker_cpu / seconds, 3) if seconds else None,
            # CPU cost per event: unlike events/s, barely changed by other load on the machine
            "redis_us_per_event": round(figures.redis_cpu_s / events * 1e6, 1),
            "workers_us_per_event": round(worker_cpu / events * 1e6, 1),
        },
        "redis_commands": dict(stats),
        **extra,
    }
    if reference is not None:
        result["reference_ops_per_s"] = round(reference.ops_per_s, 1)
        result["ratio"] = round(events_per_s / reference.ops_per_s, 4)
        result["reference"] = {
            "command": " ".join(reference.command[1:]),
            "calls": reference.calls,
            "pipeline": reference.pipeline,
            "clients": reference.clients,
            "redis_cpu_us_per_call": reference.redis_cpu_us_per_call,
        }
    return result


def _mib(n: int) -> str:
    return f"{n / MiB:,.1f} MiB"


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("mode", result["mode"]),
        ("redis", f"{result['redis_version']} ({result['redis']})"),
        ("cores", str(result["cores"])),
        ("events (N)", f"{result['events']:,}"),
        ("workers (K, each service)", str(result["workers"])),
        ("seconds", f"{result['seconds']:.2f}"),
        ("events/s", f"{result['events_per_s']:,.0f}"),
    ]
    if "offered_rate" in result:
        rows.append(("offered rate", f"{result['offered_rate']:,.0f}/s"))
    lat = result["latency_ms"]
    if lat.get("p50") is not None:
        rows.append(
            (
                "latency ms p50/p90/p99/p99.9/max",
                " / ".join(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "p999", "max")),
            )
        )
    mem = result["memory"]
    rows += [
        ("redis used_memory before", _mib(mem["used_memory_before"])),
        ("  after preload", _mib(mem["used_memory_loaded"])),
        ("  after run", _mib(mem["used_memory_after"])),
    ]
    for service, values in result["worker_rss_bytes"].items():
        rows.append((f"{service} worker RSS", ", ".join(_mib(v) for v in values) or "-"))
    cpu = result["cpu"]
    rows.append(
        (
            "CPU s (cores) redis | lending | shelving",
            f"{cpu['redis_s']:.2f} ({cpu['redis_cores']:.2f}) | {cpu['lending_s']:.2f} | "
            f"{cpu['shelving_s']:.2f}  (workers {cpu['workers_cores']:.2f} cores)",
        )
    )
    rows.append(
        (
            "CPU µs per event redis | workers",
            f"{cpu['redis_us_per_event']:.1f} | {cpu['workers_us_per_event']:.1f}",
        )
    )
    for name, s in list(result["redis_commands"].items())[:TOP_COMMANDS]:
        rows.append(
            (f"  redis {name}", f"{s['calls']:,.0f} calls, {s['usec_per_call']:,.1f} µs/call")
        )
    if "reference_ops_per_s" in result:
        rows.append(("reference (redis-benchmark)", f"{result['reference_ops_per_s']:,.0f} ops/s"))
        rows.append(("ratio", f"{result['ratio']:.1%}"))
    rows.append(
        ("correct", "yes (audit ok, one outcome per request)" if result["correct"] else "NO")
    )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"  ! {v}" for v in result["violations"]]
    lines += [f"  note: {n}" for n in result["notes"]]
    return "\n".join(lines)
