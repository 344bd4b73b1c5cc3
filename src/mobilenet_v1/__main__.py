"""``python -m mobilenet_v1`` (also what ``torchrun -m mobilenet_v1`` runs).

May import: ``cli``.
"""

import sys

from .cli import main

sys.exit(main())
