#!/usr/bin/env python3
"""Render bench/run.sh results (JSON lines) as the markdown table of issue 8.

usage: table.py results.jsonl machine.txt CLK_TCK

Rounds of the same system and load are averaged (throughput, percentiles).
CPU per 1,000 requests comes from the saturation runs: the server's
utime+stime delta over every request it answered (warm-up included).
"""
import json
import sys
from collections import defaultdict

results, machine, tck = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = [json.loads(l) for l in open(results) if l.strip()]
runs = defaultdict(list)
hwm = {}
audit = {}
for r in rows:
    if r.get("load") == "hwm":
        hwm[r["system"]] = r
    elif r.get("load") == "audit":
        audit[r["system"]] = r
    else:
        runs[(r["system"], r["load"])].append(r)

systems = []
for r in rows:
    if r["system"] not in systems and r.get("load") not in ("hwm", "audit"):
        systems.append(r["system"])
loads = []
for r in rows:
    l = r.get("load")
    if l not in loads and l not in ("hwm", "sat", "audit") and not str(l).startswith("c"):
        loads.append(l)


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def agg(sys_, load, key):
    return mean([r[key] for r in runs.get((sys_, load), [])])


def cpu_per_1k(sys_, key="cpu_ticks"):
    rs = runs.get((sys_, "sat"), [])
    req = sum(r["total"] for r in rs)
    return (sum(r[key] for r in rs) / tck) / req * 1000 if req else float("nan")


def per_req(sys_, key):
    """A counter summed over the saturation runs, per request answered (None if not counted)."""
    rs = [r for r in runs.get((sys_, "sat"), []) if r.get(key) is not None]
    req = sum(r["total"] for r in rs)
    return sum(r[key] for r in rs) / req if req else None


def ratio(a, b):
    return f"{a / b:.2f}" if b and b == b and a == a else "-"


def ms(us):
    return f"{us / 1000:.2f}"


def errs(sys_):
    return sum(r["errors"] for k, rs in runs.items() if k[0] == sys_ for r in rs)


out = []
out.append("```")
out.append(open(machine).read().strip())
out.append("```")
out.append("")
hdr = ["system", "sat rps", "/nginx", "/direct"]
for l in loads:
    hdr += [f"@{l}/s p50/p99/p99.9 ms", f"@{l}/s p99 over direct ms"]
hdr += ["CPU s/1k req", "/nginx", "/direct", "upstream CPU s/1k", "ctx sw/req"]
with_syscalls = any(r.get("syscalls") is not None for r in rows)
if with_syscalls:
    hdr += ["syscalls/req"]
hdr += ["peak RSS MiB", "/nginx", "errors"]
out.append("| " + " | ".join(hdr) + " |")
out.append("|" + "---|" * len(hdr))
ng_rps, di_rps = agg("nginx", "sat", "rps"), agg("direct", "sat", "rps")
ng_cpu, di_cpu = cpu_per_1k("nginx"), cpu_per_1k("direct")
ng_rss = hwm.get("nginx", {}).get("hwm_kib_before_c1000", float("nan")) / 1024
for s in systems:
    rps = agg(s, "sat", "rps")
    row = [s, f"{rps:.0f}", ratio(rps, ng_rps), ratio(rps, di_rps)]
    for l in loads:
        p50, p99, p999 = (agg(s, l, k) for k in ("p50_us", "p99_us", "p999_us"))
        row.append(f"{ms(p50)} / {ms(p99)} / {ms(p999)}")
        row.append(f"{(p99 - agg('direct', l, 'p99_us')) / 1000:+.2f}")
    cpu = cpu_per_1k(s)
    up = cpu_per_1k(s, "upstream_cpu_ticks") if s != "direct" else float("nan")
    rss = hwm.get(s, {}).get("hwm_kib_before_c1000", float("nan")) / 1024
    row += [f"{cpu:.3f}", ratio(cpu, ng_cpu), ratio(cpu, di_cpu),
            f"{up:.3f}" if up == up else "-"]
    for key, shown in [("ctx_switches", True), ("syscalls", with_syscalls)]:
        if shown:
            v = per_req(s, key)
            row.append(f"{v:.2f}" if v is not None else "-")
    row += [f"{rss:.1f}", ratio(rss, ng_rss), str(errs(s))]
    out.append("| " + " | ".join(row) + " |")

out.append("")
out.append("Per-feature cost (each row turns one feature off, relative to full `cubegate`):")
out.append("")
out.append("| variant | sat rps | / cubegate | CPU s/1k req | saved vs cubegate |" +
           "".join(f" @{l}/s p99 ms |" for l in loads))
out.append("|" + "---|" * (5 + len(loads)))
base_rps, base_cpu = agg("cubegate", "sat", "rps"), cpu_per_1k("cubegate")
LABELS = {
    "cubegate": "full (validation, audit+fsync, rate limit)",
    "cg-nofsync": "audit without fsync",
    "cg-nofsync-nocp": "audit without fsync, checkpoints off (every 10^9 records / hour)",
    "cg-noaudit": "audit off",
    "cg-noval": "validation off",
    "cg-norl": "rate limiter off",
    "cg-tmpfs": "full, audit log on tmpfs (fdatasync free: the disk's share)",
    "cg-nowait": "full, no group-commit wait",
    "cg-batchsched": "full, audit writer thread under SCHED_BATCH",
    "cg-h1": "full, upstream HTTP/1.1 forced",
    "cg-h2": "full, upstream HTTP/2 forced",
    "cg-baseline": "full, on the BASELINE_BIN binary (before/after)",
    "cg-baseline-nofsync": "audit without fsync, on the BASELINE_BIN binary",
}


def label(s):
    if s in LABELS:
        return LABELS[s]
    if s.startswith("cg-wait"):
        return f"full, group-commit wait {s[len('cg-wait'):]} us"
    return "see bench/run.sh"  # every variant gets a row, named or not


# In the order the run started them.
for s in ["cubegate"] + [x for x in systems if x.startswith("cg-")]:
    what = label(s)
    if (s, "sat") not in runs:
        continue
    rps, cpu = agg(s, "sat", "rps"), cpu_per_1k(s)
    out.append(f"| {s}: {what} | {rps:.0f} | {ratio(rps, base_rps)} | {cpu:.3f} | "
               f"{(base_cpu - cpu) / base_cpu * 100:+.0f}% |" +
               "".join(f" {ms(agg(s, l, 'p99_us'))} |" for l in loads))

c1k = [k for k in runs if str(k[1]).startswith("c")]
if c1k:
    out.append("")
    out.append("Peak RSS (VmHWM) under 1,000 concurrent connections (closed loop, 5 s):")
    out.append("")
    out.append("| system | rps at c1000 | p99 ms | errors | VmHWM before MiB | VmHWM after MiB |")
    out.append("|---|---|---|---|---|---|")
    for (s, l) in c1k:
        r = runs[(s, l)][0]
        h = hwm.get(s, {})
        out.append(f"| {s} | {r['rps']:.0f} | {ms(r['p99_us'])} | {r['errors']} | "
                   f"{h.get('hwm_kib_before_c1000', 0) / 1024:.1f} | {h.get('hwm_kib_after_c1000', 0) / 1024:.1f} |")
if audit:
    out.append("")
    out.append("Audit group commit over the whole run (from each gateway's /metrics):")
    out.append("")
    out.append("| system | records | writes | records per write (and fsync, when on) |")
    out.append("|---|---|---|---|")
    for s in systems:
        a = audit.get(s)
        if a and a["batches"]:
            out.append(f"| {s} | {a['records']:.0f} | {a['batches']:.0f} | {a['records'] / a['batches']:.2f} |")
print("\n".join(out))
