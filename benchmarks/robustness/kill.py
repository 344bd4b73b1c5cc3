"""Kill a tiny training run many times at random points; resume; compare with an uninterrupted run.

Each trial starts the run of tests/train/test_kill.py (alpha 0.25, 32x32, 2 epochs of 5 steps,
checkpoints every 3 steps, EMA) and SIGKILLs it 1-3 times, each kill drawn from: right
after a random step (the ``MOBILENET_V1_TEST_SIGNAL`` hook), half-way through a random
checkpoint write, or at a random moment (wall clock). After each kill it resumes with
``--resume``; the trial passes when the last resume succeeds and the final, best and EMA
weights equal those of the uninterrupted run. Writes benchmarks/results/kill.json.

    .venv/bin/python benchmarks/robustness/kill.py --trials 10
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import RESULTS, ROOT

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "train")]  # conftest, test_kill, test_train

from test_kill import COMMON, assert_same_weights, run_killed_after, run_killed_in_save
from test_train import make_folder, run_cli


def kill_once(args: list, rng: random.Random) -> str:
    """Run ``train args`` and SIGKILL it at a random point; returns what was done and the exit code."""
    kind = rng.choice(["step", "save", "time"])
    if kind == "step":
        step = rng.randint(1, 9)
        code = run_cli(args, signal_at=f"9@{step}").returncode
        return f"after step {step} (exit {code})"
    if kind == "save":
        nth = rng.randint(1, 4)
        code = run_killed_in_save(args, nth).returncode
        return f"in checkpoint write {nth} (exit {code})"
    seconds = round(rng.uniform(0, 6), 2)
    return f"{seconds} s after start (exit {run_killed_after(args, seconds)})"


def trial(data: Path, ref: Path, run: Path, rng: random.Random) -> dict:
    args = [*COMMON, "--data", data, "--output", run]
    kills = []
    for _ in range(rng.randint(1, 3)):
        kills.append(kill_once(args, rng))
        if (run / "config.json").is_file():  # the run folder exists: continue it from now on
            args = ["--resume", run]
    done = run_cli(args)
    result = {"kills": kills, "resumed": done.returncode == 0, "same_weights": False}
    if done.returncode == 0:
        try:
            assert_same_weights(ref, run)
            result["same_weights"] = True
        except AssertionError as exc:
            result["error"] = str(exc)[:200]
    else:
        result["error"] = done.stderr.strip().splitlines()[-1][:200]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "kill.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data, ref = make_folder(Path(tmp) / "data"), Path(tmp) / "ref"
        assert run_cli([*COMMON, "--data", data, "--output", ref]).returncode == 0
        print("| trial | kills | resumed | same weights |\n|---|---|---|---|")
        results = []
        for i in range(args.trials):
            run = Path(tmp) / f"run{i}"
            result = trial(data, ref, run, rng)
            results.append(result)
            shutil.rmtree(run, ignore_errors=True)
            print(
                f"| {i} | {'; '.join(result['kills'])} | {result['resumed']} | {result['same_weights']} |", flush=True
            )
    passed = sum(r["same_weights"] for r in results)
    kills = sum(len(r["kills"]) for r in results)
    print(f"{passed}/{len(results)} trials ended with the uninterrupted run's weights ({kills} kills)")
    report = {
        "command": f"benchmarks/robustness/kill.py --trials {args.trials} --seed {args.seed}",
        "trials": len(results),
        "kills": kills,
        "passed": passed,
        "seconds": round(time.perf_counter() - began, 1),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
