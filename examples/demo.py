"""`make demo`: the cost of the paper's four headline configurations and a forward pass of each."""

from __future__ import annotations

import time

import torch

from mobilenet_v1 import mobilenet_v1, model_cost

PAPER_CONFIGS = ((1.0, 224), (0.75, 192), (0.5, 160), (0.25, 128))


def main() -> None:
    torch.manual_seed(0)
    print(f"{'alpha':>5} {'res':>4} {'mult-adds':>13} {'params':>10} {'output':>12} {'forward ms':>11}")
    for alpha, res in PAPER_CONFIGS:
        model = mobilenet_v1(alpha=alpha).eval()
        cost = model_cost(model.config, res)
        x = torch.randn(1, 3, res, res)
        with torch.inference_mode():
            start = time.perf_counter()
            out = model(x)
            ms = 1000 * (time.perf_counter() - start)
        print(f"{alpha:>5g} {res:>4} {cost.mult_adds:>13,} {cost.params:>10,} {tuple(out.shape)!s:>12} {ms:>11.1f}")


if __name__ == "__main__":
    main()
