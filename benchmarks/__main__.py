"""``python -m benchmarks``: the comparison on this machine (see ``benchmarks/compare.py``)."""

import sys

from .compare import main

sys.exit(main())
