"""``python -m mobilenet_v1`` (also what ``torchrun -m mobilenet_v1`` runs)."""

import sys

from .cli import main

sys.exit(main())
