"""Benchmarks live at the repository top (``python -m benchmarks.X`` from the root), not in the installed
package: make them importable for their tests."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
