#!/usr/bin/env python3
"""Latency against throughput from bench/compare's results, as an SVG.

bench/compare calls it with the sweep's results (tab-separated, one row per system and
point: mode, workload, clients, system, per-client rate, ops/s, p50, p99, p99.9, errors,
...) and the SVG to write. For the comparison sweep (--mode compare) it draws one panel per
workload with p50 and p99 of rkv and etcd against ops/s, each point labelled with its
client count; for --mode open-loop, rkvd's p50 and p99 against ops/s, labelled with the
offered rate. Failed points ("-") are left out.

Usage: bench/plot.py --mode compare|open-loop RESULTS.tsv OUT.svg [--png OUT.png]
"""

import argparse
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

COLUMNS = ["mode", "workload", "clients", "system", "rate", "ops", "p50", "p99", "p999", "errors"]
WORKLOAD_TITLES = {"writes": "Writes", "reads90": "90% reads, 10% writes"}
COLORS = {"rkv": "#1f77b4", "etcd": "#d62728"}


def read_rows(path):
    """The rows that measured something, as dicts with numbers where numbers belong."""
    rows = []
    with open(path, newline="") as f:
        for fields in csv.reader(f, delimiter="\t"):
            if len(fields) < len(COLUMNS):
                continue
            row = dict(zip(COLUMNS, fields))
            try:
                for key in ("clients", "rate", "ops", "p50", "p99"):
                    row[key] = float(row[key])
            except ValueError:
                continue  # a failed point
            rows.append(row)
    return rows


def draw(axes, rows, label_of, color, name):
    """p50 (solid) and p99 (dashed) against ops/s for one system, points labelled and
    joined in order of offered load (clients, then rate), so that a curve bends back
    where more load brought less throughput."""
    rows = sorted(rows, key=lambda r: (r["clients"], r["rate"]))
    if not rows:
        return
    ops = [r["ops"] for r in rows]
    axes.plot(ops, [r["p50"] for r in rows], "o-", color=color, label=f"{name} p50")
    axes.plot(ops, [r["p99"] for r in rows], "s--", color=color, label=f"{name} p99", alpha=0.8)
    for r in rows:
        axes.annotate(
            label_of(r),
            (r["ops"], r["p50"]),
            textcoords="offset points",
            xytext=(4, -11),
            fontsize=8,
            color=color,
        )


def style(axes, title):
    axes.set_title(title)
    axes.set_xlabel("throughput (ops/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.set_xlim(left=0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["compare", "open-loop"], required=True)
    parser.add_argument("results")
    parser.add_argument("svg")
    parser.add_argument("--png", help="also write a PNG here")
    args = parser.parse_args()
    rows = read_rows(args.results)
    if not rows:
        print(f"plot.py: no measured points in {args.results}", file=sys.stderr)
        return 1

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small and sharp
    plt.rcParams["svg.hashsalt"] = "rkv-bench"  # stable ids from run to run
    if args.mode == "compare":
        workloads = [w for w in WORKLOAD_TITLES if any(r["workload"] == w for r in rows)]
        figure, panels = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 5), squeeze=False)
        for axes, workload in zip(panels[0], workloads):
            for system in ("rkv", "etcd"):
                draw(
                    axes,
                    [r for r in rows if r["workload"] == workload and r["system"] == system],
                    lambda r: f"{r['clients']:.0f}",
                    COLORS[system],
                    system,
                )
            style(axes, f"{WORKLOAD_TITLES[workload]} (labels: closed-loop clients)")
        figure.suptitle("rkv vs etcd, 3 nodes on one machine, fsync on")
    else:
        figure, axes = plt.subplots(figsize=(7, 5))
        draw(
            axes,
            [r for r in rows if r["system"] == "rkv"],
            lambda r: f"{r['clients'] * r['rate']:.0f}/s",
            COLORS["rkv"],
            "rkv",
        )
        style(axes, "rkvd open loop, 200 clients (labels: offered writes/s)")
    figure.tight_layout()
    figure.savefig(args.svg, format="svg", metadata={"Date": None})
    if args.png:
        figure.savefig(args.png, format="png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
