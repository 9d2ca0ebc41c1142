"""How tests run the project's commands as a user would: a bare environment (no inherited settings, no
network), except the import path, so a checkout under test runs its own code."""

from __future__ import annotations

import os
from pathlib import Path


def bare_environment(home: Path, **extra: str) -> dict[str, str]:
    """PATH, HOME and offline switches only (plus PYTHONPATH when the test run has one)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TQDM_DISABLE": "1", **extra}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env
