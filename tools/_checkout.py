"""Imported first by a script of tools/ run as ``python tools/<name>.py``: Python then puts tools/ on sys.path
instead of the checkout's root, so neither this checkout's packages nor ``tools.<name>`` would import (or
those of another checkout installed in the environment would). The root takes tools/'s place."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "tools":
    sys.path[0] = str(ROOT)
