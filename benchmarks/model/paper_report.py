"""docs/paper.md's generated part: the paper's Tables 4-7 beside ours, verdicts, Figures 4-5.

Everything here is computed from the runs in ``paper_tables.json``: each table pairs the
paper's rows (``cost.PAPER_ROWS``, ImageNet) with our runs of the same position in the plan
(Imagenette, mean and spread over seeds), each verdict states an ordering and whether it
held, and by how much against the seed-to-seed spread. The generated text replaces what lies
between the two markers of the document (the rest of it is written by hand).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mobilenet_v1.cost import PAPER_ROWS, PaperRow
from mobilenet_v1.files import save_figure, write_text

BEGIN, END = "<!-- paper_tables: begin (generated) -->", "<!-- paper_tables: end -->"
MARKERS = {"standard": "o", "full-conv": "s", "shallow": "^"}
COLORS = {"4": "tab:blue", "5": "tab:orange", "6": "tab:green", "7": "tab:red"}  # by the first table
CLAIMS = {
    "4": "a depthwise separable network is about as accurate as the same network with full convolutions",
    "5": "making the network thinner beats making it shallower at about the same cost",
    "6": "accuracy falls off smoothly as the width multiplier shrinks",
    "7": "accuracy falls off smoothly as the resolution shrinks",
}


class Config:
    """The seeds of one model of one table: mean, sample standard deviation and range of top-1."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.run = runs[0]
        self.top1 = [r["top1"] for r in sorted(runs, key=lambda r: r["seed"])]
        self.mean = statistics.fmean(self.top1)
        self.sd = statistics.stdev(self.top1) if len(self.top1) > 1 else math.nan
        self.range = max(self.top1) - min(self.top1)
        self.wall = statistics.fmean(r["wall_seconds"] for r in runs)

    @property
    def label(self) -> str:
        r = self.run
        kind = {"standard": "", "full-conv": " full conv", "shallow": " shallow"}[r["variant"]]
        return f"{r['alpha']:g}/{r['resolution']}{kind}"

    def accuracy(self) -> str:
        if len(self.top1) == 1:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.sd:.2f} ({', '.join(f'{t:.1f}' for t in self.top1)})"


def group(runs: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[Config]]:
    """(plan, table, epochs) -> its models, each with all its seeds: a table trained for
    another number of epochs than the plan's (``--epochs``) is a table of its own."""
    by_model: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_model[(r["plan"], r["table"], r["epochs"], r["variant"], r["alpha"], r["resolution"])].append(r)
    tables: dict[tuple[str, str, int], list[Config]] = defaultdict(list)
    for key, seeds in by_model.items():
        tables[key[:3]].append(Config(seeds))
    # The paper lists each table's rows from the most to the least mult-adds, and so do we.
    return {key: sorted(c, key=lambda c: -c.run["mult_adds"]) for key, c in sorted(tables.items())}


def paper_rows(table: str) -> list[PaperRow]:
    return [row for row in PAPER_ROWS if row.table == table]


def table_markdown(table: str, configs: list[Config]) -> str:
    head = (
        "| paper's model | paper top-1 (ImageNet) | paper mult-adds (M) | paper params (M) "
        "| our model (α/px) | our top-1 (Imagenette, mean ± sd (seeds)) | our mult-adds (M) | our params (M) "
        "| epochs | wall (min) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    rows = paper_rows(table)
    for i, c in enumerate(configs):
        p = rows[i] if i < len(rows) else None
        paper = ("-", "-", "-", "-") if p is None else (p.label, f"{p.top1:.1f}", f"{p.mult_adds_m:g}", _m(p.params_m))
        ours = (c.label, c.accuracy(), f"{c.run['mult_adds'] / 1e6:.2f}", f"{c.run['params'] / 1e6:.3f}")
        lines.append("| " + " | ".join((*paper, *ours, str(c.run["epochs"]), f"{c.wall / 60:.1f}")) + " |")
    return "\n".join(lines)


def _m(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def pooled_sd(configs: list[Config]) -> float:
    """The seed-to-seed standard deviation pooled over every model trained with several seeds."""
    multi = [c for c in configs if len(c.top1) > 1]
    dof = sum(len(c.top1) - 1 for c in multi)
    return math.sqrt(sum(c.sd**2 * (len(c.top1) - 1) for c in multi) / dof) if dof else math.nan


def pair_verdict(table: str, configs: list[Config]) -> str:
    """Tables 4 and 5: the paper's first row beat its second; did ours, by more than the seeds?"""
    first, second = configs[:2]
    p1, p2 = paper_rows(table)[:2]
    diff, paper_diff = first.mean - second.mean, p1.top1 - p2.top1
    held = "reproduced" if (diff > 0) == (paper_diff > 0) else "**not reproduced**"
    if min(len(first.top1), len(second.top1)) < 2:
        noise = "one seed of a model: no seed-to-seed spread to compare it with"
    else:
        spread = max(first.range, second.range)
        size = "larger" if abs(diff) > spread else "**not larger**"
        noise = f"the difference is {size} than the seed-to-seed spread (largest range over seeds {spread:.2f} points)"
    cost = first.run["mult_adds"] / second.run["mult_adds"]
    return (
        f"**Table {table}** ({CLAIMS[table]}): paper {p1.label} {p1.top1:.1f}% vs {p2.label} {p2.top1:.1f}% "
        f"({paper_diff:+.1f} points at {p1.mult_adds_m / p2.mult_adds_m:.2f}x the mult-adds); ours {first.label} "
        f"{first.mean:.2f}% vs {second.label} {second.mean:.2f}% ({diff:+.2f} points at {cost:.2f}x the mult-adds, "
        f"{len(first.top1)} and {len(second.top1)} seeds). Ordering {held}; the gap is {_times(diff, paper_diff)} "
        f"the paper's; {noise}."
    )


def _times(ours: float, paper: float) -> str:
    """How our gap compares with the paper's, in words."""
    if (ours > 0) != (paper > 0):
        return "of the opposite sign to"
    return f"{abs(ours) / abs(paper):.1f}x"


def sweep_verdict(table: str, configs: list[Config], sd: float) -> str:
    """Tables 6 and 7: does accuracy fall at every step down in cost, as in the paper?"""
    ordered = sorted(configs, key=lambda c: -c.run["mult_adds"])
    drops = [a.mean - b.mean for a, b in itertools.pairwise(ordered)]
    paper = sorted(paper_rows(table), key=lambda p: -p.mult_adds_m)
    paper_drops = [a.top1 - b.top1 for a, b in itertools.pairwise(paper)]
    inversions = sum(d <= 0 for d in drops)
    held = "reproduced" if inversions == 0 else f"**not reproduced** ({inversions} of {len(drops)} steps do not fall)"
    large = sum(abs(d) > 2 * sd for d in drops)
    noise = (
        "no seed spread measured"
        if math.isnan(sd)
        else f"{large} of {len(drops)} steps larger than twice the seed-to-seed sd pooled over the models "
        f"trained with several seeds ({sd:.2f} points)"
    )
    return (
        f"**Table {table}** ({CLAIMS[table]}): paper drops {', '.join(f'{d:.1f}' for d in paper_drops)} points "
        f"({paper[0].top1 - paper[-1].top1:.1f} in all); ours {' → '.join(c.label for c in ordered)}: drops "
        f"{', '.join(f'{d:.2f}' for d in drops)} points ({ordered[0].mean - ordered[-1].mean:.2f} in all). "
        f"Monotonic fall {held}; {noise}."
    )


def log_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``top1 = a * log10(mult_adds) + b``: slope a (points per 10x) and R^2."""
    x, y = np.log10([p[0] for p in points]), np.array([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    residual, total = y - (slope * x + intercept), float(((y - y.mean()) ** 2).sum())
    return float(slope), 1.0 - float(residual @ residual) / total if total else math.nan  # all equal: no R^2


def figure4_verdict(configs: list[Config]) -> str:
    """Figure 4: top-1 against log mult-adds over the standard models of Tables 6-7."""
    ours = {(c.run["alpha"], c.run["resolution"]): (c.run["mult_adds"], c.mean) for c in configs}
    paper = {(p.alpha, p.resolution): (p.mult_adds_m, p.top1) for t in "67" for p in paper_rows(t)}
    if len(ours) < 3:
        return "**Figure 4**: fewer than 3 standard models trained; no fit."
    (a, r2), (pa, pr2) = log_fit(list(ours.values())), log_fit(list(paper.values()))
    return (
        f"**Figure 4** (accuracy is log-linear in mult-adds): paper {pa:.1f} points per 10x mult-adds, "
        f"R² {pr2:.3f} ({len(paper)} models); ours {a:.1f} points per 10x, R² {r2:.3f} ({len(ours)} models)."
    )


def plot(configs: list[Config], x_key: str, path: Path) -> Path:
    """Figure 4 (``mult_adds``) or 5 (``params``): ours on Imagenette beside the paper's ImageNet points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (ours, paper) = plt.subplots(1, 2, figsize=(12, 4.8))
    models: dict[tuple, list[Config]] = defaultdict(list)  # one point per model, whichever tables trained it
    for c in configs:
        models[(c.run["variant"], c.run["alpha"], c.run["resolution"])].append(c)
    for same in models.values():
        c = max(same, key=lambda c: len(c.top1))
        x, tables = c.run[x_key] / 1e6, "/".join(sorted({s.run["table"] for s in same}))
        err = [[c.mean - min(c.top1)], [max(c.top1) - c.mean]]
        ours.errorbar(x, c.mean, yerr=err, fmt=MARKERS[c.run["variant"]], color=COLORS[tables[0]], capsize=3)
        ours.annotate(f"{c.label} (T{tables})", (x, c.mean), fontsize=7, xytext=(4, 4), textcoords="offset points")
    rows = {(p.alpha, p.resolution, p.variant): p for p in PAPER_ROWS if p.table in "4567"}
    for p in rows.values():
        x = p.mult_adds_m if x_key == "mult_adds" else p.params_m or paper_row_params(p)
        paper.plot(x, p.top1, MARKERS[p.variant], color=COLORS[p.table])
        paper.annotate(p.label, (x, p.top1), fontsize=7, xytext=(4, 4), textcoords="offset points")
    name = "mult-adds (M)" if x_key == "mult_adds" else "parameters (M)"
    for ax, title in ((ours, "ours: Imagenette val top-1 (min-max over seeds)"), (paper, "paper: ImageNet top-1")):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{name}, log scale")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def paper_row_params(row: PaperRow) -> float:
    """Table 7 prints no parameters: the same alpha's row of Table 6 gives them (rho changes none)."""
    return next(p.params_m for p in PAPER_ROWS if p.alpha == row.alpha and p.params_m and p.variant == row.variant)


def report(runs: list[dict[str, Any]], figures: Path, link: str) -> str:
    """The generated markdown: per plan, each table, its verdict, then both figures (the
    figures and the Figure 4 fit take the runs of the plan's usual number of epochs)."""
    out = []
    for plan in sorted({r["plan"] for r in runs}):
        tables = {(t, e): c for (p, t, e), c in group(runs).items() if p == plan}
        usual = statistics.mode(r["epochs"] for r in runs if r["plan"] == plan)
        sd = pooled_sd([c for cs in tables.values() for c in cs])
        out.append(f"### Plan `{plan}`: {runs_of(runs, plan)}")
        for (table, epochs), configs in tables.items():
            out += [
                f"#### Table {table}" + ("" if epochs == usual else f", {epochs} epochs"),
                table_markdown(table, configs),
            ]
            if len(configs) > 1:
                out.append(pair_verdict(table, configs) if table in "45" else sweep_verdict(table, configs, sd))
        standard = [c for (t, e), cs in tables.items() if t in "67" and e == usual for c in cs]
        out.append(figure4_verdict(standard))
        everything = [c for (_, e), cs in tables.items() if e == usual for c in cs]
        for number, key in (("4", "mult_adds"), ("5", "params")):
            png = plot(everything, key, figures / f"figure{number}_{plan}.png")
            out.append(f"![Figure {number}, plan {plan}]({link}/{png.name})")
    return "\n\n".join(out) + "\n"


def runs_of(runs: list[dict[str, Any]], plan: str) -> str:
    mine = [r for r in runs if r["plan"] == plan]
    hours = sum(r["wall_seconds"] for r in mine if r["trained_for_table"] == r["table"]) / 3600
    return f"{len(mine)} runs, {hours:.1f} h in all, on {'; '.join(sorted({r['machine'] for r in mine}))}"


def write_report(runs: list[dict[str, Any]], doc: Path) -> Path:
    """Replace the generated part of ``doc`` (its figures go to ``doc``'s folder/paper/)."""
    if not runs:
        raise ValueError("no runs to report: train some first (--table)")
    text = doc.read_text(encoding="utf-8") if doc.is_file() else f"# The paper's experiments\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no generated part: add the lines {BEGIN} and {END}")
    generated = report(runs, doc.parent / "paper", "paper")
    head, rest = text.split(BEGIN, 1)
    return write_text(doc, f"{head}{BEGIN}\n\n{generated}\n{END}{rest.split(END, 1)[1]}")
