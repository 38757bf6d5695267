#!/usr/bin/env python3
"""Plot bench/soak.sh's CSVs and judge them.

Usage: soak_plot.py [--warmup S] [--duration S] [--max-slope-mib-per-10min M]
                    [--out PNG] CSV...

Draws one PNG with five panels over time (cubegate's RSS, open file
descriptors, audit directory bytes, p99 latency and errors per interval), one
line per CSV (a CSV is one upstream mode, named soak-<mode>.csv). Prints one line per CSV:

    PASS|FAIL <mode>: RSS slope after <warmup> s: <x> MiB/10 min (bound <m>), errors <n>, ...

PASS needs: the least-squares slope of RSS over the samples taken after the
warm-up below the bound, zero errors over the whole run (warm-up included),
and cubegate alive at every sample. Exit status 1 if any CSV failed.

With --duration (the load's length), samples taken from that second on are
left out of RSS, fds and audit bytes (plot and slope): the load generator is
closing its connections then, which is not the steady state. Their latency
and errors still count.
"""

import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

MIB = 1024 * 1024


def load(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(r)
    return rows


def num(v):
    return float(v) if v not in ("", None) else None


def slope(xs, ys):
    """Least-squares slope of ys over xs (None with fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def steady(rows, duration):
    """The rows sampled while the load was still running."""
    if duration is None:
        return rows
    return [r for r in rows if num(r["t_s"]) < duration]


def summary_errors(csv_path):
    """Errors in the load generator's summary beside the CSV (None if absent).

    It can count more than the intervals: a connection whose requests did
    not all finish within 30 s of the end counts as one error there."""
    name = os.path.basename(csv_path).replace("soak-", "loadgen-", 1).removesuffix(".csv")
    path = os.path.join(os.path.dirname(csv_path), name + ".json")
    try:
        with open(path) as f:
            return sum(int(json.loads(line).get("errors", 0)) for line in f if line.strip())
    except (OSError, ValueError):
        return None


def judge(mode, rows, warmup, bound, duration, lg_errors=None):
    """Returns (passed, line)."""
    errors = sum(int(r["errors"] or 0) for r in rows)
    if lg_errors is not None and lg_errors > errors:
        errors = lg_errors
    requests = sum(int(r["requests"] or 0) for r in rows)
    gone = sum(1 for r in rows if not r["rss_kib"])
    p99 = sorted(int(r["p99_us"] or 0) for r in rows)
    t_end = num(rows[-1]["t_s"]) if rows else 0
    rows = steady(rows, duration)
    t = [num(r["t_s"]) for r in rows]
    rss = [num(r["rss_kib"]) for r in rows]
    after = [(x, y * 1024) for x, y in zip(t, rss) if y is not None and x >= warmup]
    s = slope([x for x, _ in after], [y for _, y in after])
    per10 = None if s is None else s * 600 / MIB
    reasons = []
    if per10 is None:
        reasons.append(f"fewer than 2 samples after the {warmup:g} s warm-up")
    elif per10 >= bound:
        reasons.append("RSS grows")
    if errors:
        reasons.append("errors")
    if gone:
        reasons.append(f"cubegate gone at {gone} samples")
    if not t:
        reasons.append("no samples")
    ok = not reasons
    rss_vals = [v for v in rss if v is not None]
    fds = [int(r["fds"]) for r in rows if r["fds"]]
    line = (
        f"{'PASS' if ok else 'FAIL'} {mode}: RSS slope after {warmup:g} s: "
        + ("n/a" if per10 is None else f"{per10:+.3f}")
        + f" MiB/10 min (bound {bound:g}), errors {errors} of {requests} requests"
        + (
            f"; RSS {rss_vals[0] / 1024:.1f} -> {rss_vals[-1] / 1024:.1f} MiB"
            f" (max {max(rss_vals) / 1024:.1f})"
            if rss_vals
            else ""
        )
        + (f", fds {fds[0]} -> {fds[-1]} (max {max(fds)})" if fds else "")
        + (f", worst interval p99 {p99[-1] / 1000:.1f} ms" if p99 else "")
        + (f", {len(p99)} samples over {t_end:.0f} s" if p99 else "")
        + (f" [{'; '.join(reasons)}]" if reasons else "")
    )
    # Open loop: when the machine cannot serve RATE, requests queue and the
    # run ends late; latency then measures the queue, not cubegate.
    if duration is not None and t_end > duration + 10:
        line += (
            f"\n  note {mode}: the load ended {t_end - duration:.0f} s late: the machine did not"
            " keep up with the offered rate (lower RATE, or a quieter machine)"
        )
    return ok, line


def plot(runs, warmup, duration, out):
    fig, axes = plt.subplots(5, 1, figsize=(10, 13), sharex=True)
    panels = [
        ("rss_kib", 1 / 1024, "RSS (MiB)"),
        ("fds", 1, "open fds"),
        ("audit_bytes", 1 / MIB, "audit dir (MiB)"),
        ("p99_us", 1 / 1000, "p99 per interval (ms)"),
        ("errors", 1, "errors per interval"),
    ]
    for mode, all_rows in runs:
        for i, (ax, (col, scale, label)) in enumerate(zip(axes, panels)):
            rows = steady(all_rows, duration) if i < 3 else all_rows
            t = [num(r["t_s"]) for r in rows]
            pts = [(x, num(r[col]) * scale) for x, r in zip(t, rows) if num(r[col]) is not None]
            ax.plot([x for x, _ in pts], [y for _, y in pts], label=mode, linewidth=1.2)
            ax.set_ylabel(label)
    for ax in (axes[1], axes[4]):
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    for ax in axes:
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.grid(True, alpha=0.3)
    # A stall or an outage can be orders of magnitude above the rest of p99:
    # then a log scale keeps both readable.
    p99s = sorted(num(r["p99_us"]) or 0 for _, rows in runs for r in rows)
    if p99s and p99s[-1] > 20 * max(p99s[len(p99s) // 2], 1):
        axes[3].set_yscale("log")
        axes[3].yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axes[3].yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[0].legend(loc="best", fontsize="small")
    axes[4].set_xlabel(f"seconds since the load started (dotted: end of the {warmup:g} s warm-up)")
    fig.suptitle("cubegate soak: RSS, file descriptors, audit bytes, p99, errors")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csvs", nargs="+")
    ap.add_argument("--warmup", type=float, default=120.0)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--max-slope-mib-per-10min", type=float, default=1.0)
    ap.add_argument("--out", default="soak.png")
    a = ap.parse_args()
    runs = []
    lg_errors = {}
    for path in a.csvs:
        mode = os.path.basename(path).removesuffix(".csv").removeprefix("soak-")
        runs.append((mode, load(path)))
        lg_errors[mode] = summary_errors(path)
    plot(runs, a.warmup, a.duration, a.out)
    all_ok = True
    for mode, rows in runs:
        ok, line = judge(
            mode, rows, a.warmup, a.max_slope_mib_per_10min, a.duration, lg_errors[mode]
        )
        all_ok &= ok
        print(line)
    print(f"soak: {'PASS' if all_ok else 'FAIL'} (plot: {a.out})")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
