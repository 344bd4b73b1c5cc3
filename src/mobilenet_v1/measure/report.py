"""Plots and tables of the measured trade-off (the paper's Figures 4-5, on this machine).

Three PNGs: accuracy against mult-adds (log x, Figure 4), accuracy against measured
latency with the Pareto front, and latency against mult-adds with a least-squares line
(how well mult-adds predict latency here); plus a markdown and a JSON table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..files import save_figure, write_text
from ..optional import pyplot
from .tradeoff import Point, is_int8, iter_rows, pareto_front

__all__ = ["latency_fit", "markdown_table", "write_report"]

MARKERS = {1.0: "o", 0.75: "s", 0.5: "^", 0.25: "D"}


def latency_fit(points: list[Point]) -> dict[str, float]:
    """Least-squares ``latency = a * mult_adds + b`` and its R^2."""
    x = np.array([p.mult_adds / 1e6 for p in points])
    y = np.array([p.latency_ms for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    spread = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(residual @ residual) / spread if spread > 0 else 1.0  # equal latencies: a flat line fits
    return {"ms_per_million_mult_adds": float(slope), "intercept_ms": float(intercept), "r2": r2}


def markdown_table(points: list[Point], runtime: str) -> str:
    columns = (
        "α",
        "ρ",
        "mult-adds (M)",
        "params (M)",
        "latency median (ms)",
        "p90 (ms)",
        "Google top-1 float",
        "Google top-1 quant",
        "Imagenette top-1 (here)",
        "Pareto",
        "latency flags",
    )
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in iter_rows(points, runtime):
        cells = (
            f"{r['alpha']:g}",
            str(r["resolution"]),
            f"{r['mult_adds'] / 1e6:.1f}",
            f"{r['params'] / 1e6:.2f}",
            f"{r['latency_ms']:.2f}",
            f"{r['latency_p90_ms']:.2f}",
            f"{r['google_top1_float']:.1f}",
            f"{r['google_top1_quant']:.1f}",
            "-" if r["imagenette_top1"] is None else f"{r['imagenette_top1']:.2f}",
            "yes" if r["pareto"] else "",
            "; ".join(r["flags"]) or "-",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scatter(ax: Any, points: list[Point], x: Any, y: Any) -> None:
    for alpha, marker in MARKERS.items():
        sel = [p for p in points if p.alpha == alpha]
        ax.scatter([x(p) for p in sel], [y(p) for p in sel], marker=marker, label=f"α={alpha:g}")
        for p in sel:
            ax.annotate(str(p.resolution), (x(p), y(p)), textcoords="offset points", xytext=(4, 3), fontsize=7)


def write_report(points: list[Point], runtime: str, threads: int, out_dir: Path) -> list[Path]:
    """Write the three plots, ``tradeoff.md`` and ``tradeoff.json`` into ``out_dir``."""
    plt = pyplot("the trade-off plots")
    from matplotlib.ticker import NullFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    acc = lambda p: p.google_top1(runtime)  # noqa: E731
    kind = "quantized" if is_int8(runtime) else "float"
    where = f"{runtime}, {threads} thread{'s' if threads > 1 else ''}, batch 1"
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4.5))
    _scatter(ax, points, lambda p: p.mult_adds / 1e6, lambda p: p.google_top1_float)
    ax.set(
        xscale="log",
        xlabel="mult-adds (millions, log scale)",
        ylabel="ImageNet top-1 (%), Google float",
        title="Accuracy vs mult-adds (paper Figure 4)",
    )
    ax.set_xticks([10, 20, 50, 100, 200, 500], labels=["10", "20", "50", "100", "200", "500"])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(), ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "accuracy_vs_mult_adds.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    _scatter(ax, points, lambda p: p.latency_ms, acc)
    front = pareto_front(points, acc)
    ax.step([p.latency_ms for p in front], [acc(p) for p in front], where="post", color="k", lw=1, label="Pareto front")
    ax.set(
        xlabel=f"latency (ms, median; {where})",
        ylabel=f"ImageNet top-1 (%), Google {kind}",
        title="Accuracy vs latency on this machine",
    )
    ax.legend(), ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "accuracy_vs_latency.png"))

    fit = latency_fit(points)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    _scatter(ax, points, lambda p: p.mult_adds / 1e6, lambda p: p.latency_ms)
    xs = np.linspace(0, max(p.mult_adds for p in points) / 1e6, 50)
    ax.plot(
        xs,
        fit["ms_per_million_mult_adds"] * xs + fit["intercept_ms"],
        "k--",
        lw=1,
        label=f"least squares, R²={fit['r2']:.3f}",
    )
    ax.set(xlabel="mult-adds (millions)", ylabel=f"latency (ms; {where})", title="Do mult-adds predict latency?")
    ax.legend(), ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "latency_vs_mult_adds.png"))

    table = out_dir / "tradeoff.md"
    write_text(table, f"Runtime: {where}.\n\n{markdown_table(points, runtime)}\n")
    data = {"runtime": runtime, "threads": threads, "latency_fit": fit, "points": list(iter_rows(points, runtime))}
    write_text(out_dir / "tradeoff.json", json.dumps(data, indent=2))
    return [*paths, table, out_dir / "tradeoff.json"]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
