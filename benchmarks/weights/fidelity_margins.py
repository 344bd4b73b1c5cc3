"""Where the float level and LiteRT part: how close each disagreement is to a tie.

For each shared model, over Imagenette val (uint8 centre crops, as ``fidelity.py``): the
images where our float model's top-1 is not among LiteRT's top-scoring classes, and for
those, (a) how far LiteRT's score for our class is below its best, in output steps
(1/256), (b) how far ahead our float logit for our class is of LiteRT's class, and (c)
LiteRT's confidence there against all images. Prints a table, writes JSON.

    nice python benchmarks/weights/fidelity_margins.py [--models NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS
from fidelity import shared_models, val_samples

from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.measure.fidelity import EVALUATORS, compare


def margins(paths: list[Path], samples: list[tuple[Path, int]], folders: dict[str, int]) -> dict:
    scores: dict[str, torch.Tensor] = {}
    evaluators = {name: EVALUATORS[name] for name in ("litert", "float")}
    agreement = compare(paths, samples, folders, evaluators=evaluators, workers=1, scores=scores)["float"]
    lite = scores["litert"][:, 1:] * 256  # uint8 softmax steps; drop background
    logit = scores["float"][:, 1:]
    rows = torch.arange(len(lite))
    pick, lite_pick = logit.argmax(1), lite.argmax(1)
    best = lite.max(1).values
    apart = lite[rows, pick] != best  # not even among LiteRT's tied best
    steps = (best - lite[rows, pick])[apart]
    lead = (logit[rows, pick] - logit[rows, lite_pick])[apart]
    return {
        "images": len(lite),
        "agreement_ties": agreement["agreement_ties"],
        "disagreements": int(apart.sum()),
        "litert_steps_below_best_median": steps.median().item(),
        "litert_steps_below_best_le_4": 100.0 * (steps <= 4).float().mean().item(),
        "float_logit_lead_median": lead.median().item(),
        "float_logit_lead_lt_0.25": 100.0 * (lead < 0.25).float().mean().item(),
        "litert_top_score_median_disagreements": best[apart].median().item() / 256,
        "litert_top_score_median_all": best.median().item() / 256,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--models", nargs="+", help="Google model names (default: the four shared ones)")
    parser.add_argument("--output", type=Path, default=RESULTS / "fidelity_margins.json")
    args = parser.parse_args()
    samples, folders = val_samples(args.data)
    models = shared_models(args.data / "pretrained")
    rows = [{"model": name, **margins(models[name], samples, folders)} for name in args.models or list(models)]
    print("| model | agreement (ties) | disagreements | LiteRT steps below best (median; ≤ 4) |", end="")
    print(" float logit lead (median; < 0.25) | LiteRT top score: disagreements / all |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['agreement_ties']:.2f}% | {r['disagreements']} | "
            f"{r['litert_steps_below_best_median']:.0f}; {r['litert_steps_below_best_le_4']:.0f}% | "
            f"{r['float_logit_lead_median']:.3f}; {r['float_logit_lead_lt_0.25']:.0f}% | "
            f"{r['litert_top_score_median_disagreements']:.2f} / {r['litert_top_score_median_all']:.2f} |"
        )
    meta = {
        "machine": f"{os.cpu_count()}-core {cpu_name()}",
        "command": "nice python benchmarks/weights/fidelity_margins.py",
    }
    args.output.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
