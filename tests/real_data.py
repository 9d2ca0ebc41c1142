"""Where tests find real public data sets (evaluation sets, GSM8K), which are never part of the repository.

``DIFFULLAMA_DATA_DIR`` names a folder laid out as docs/data.md describes (one sub-folder per set); by
default the tests look for ``shared/data`` beside the repository checkout, as on the project's
development machines. Tests that need it skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DIFFULLAMA_DATA_DIR", REPOSITORY.parent / "shared" / "data"))
