"""Cost of the 16 paper configurations (alpha x resolution): prints a table, writes JSON.

python benchmarks/model/cost_table.py [--output benchmarks/results/cost_table.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import RESULTS

from mobilenet_v1.config import MobileNetV1Config
from mobilenet_v1.cost import model_cost

ALPHAS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=RESULTS / "cost_table.json")
    args = parser.parse_args()
    rows = []
    print("| alpha | res | mult-adds (exact) | M | mult-adds (paper rho^2) M | params |")
    print("|---|---|---|---|---|---|")
    for alpha in ALPHAS:
        for res in RESOLUTIONS:
            config = MobileNetV1Config(alpha=alpha)
            exact, paper = model_cost(config, res), model_cost(config, res, "paper")
            rows.append(
                {
                    "alpha": alpha,
                    "resolution": res,
                    "mult_adds": exact.mult_adds,
                    "mult_adds_paper": paper.mult_adds,
                    "params": exact.params,
                }
            )
            print(
                f"| {alpha:g} | {res} | {exact.mult_adds:,} | {exact.mult_adds / 1e6:.2f} | "
                f"{paper.mult_adds / 1e6:.2f} | {exact.params:,} |"
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
