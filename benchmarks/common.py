"""What every benchmark shares: the repository root and the data folder.

The data folder is ``$MOBILENET_V1_DATA`` (the Makefile sets it to ``../shared/data``),
else ``../shared/data`` beside the checkout; it is also exported to the environment, so
the library finds Google's files there instead of downloading them.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # the figures docs/ cites (benchmarks/README.md indexes them)
DATA = Path(os.environ.get("MOBILENET_V1_DATA") or ROOT.parent / "shared" / "data")
os.environ["MOBILENET_V1_DATA"] = str(DATA)
