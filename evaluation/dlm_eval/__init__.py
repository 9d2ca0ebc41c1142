"""Evaluation of diffusion LMs (and their AR baselines) on the paper's benchmarks.

Tasks load their published formats and score through an engine: the diffusion core's scorer and sampler
(:class:`DiffusionEngine`) or a causal LM (:class:`AutoregressiveEngine`).
"""

from .ar_engine import AutoregressiveEngine
from .data import DataSource
from .diffusion_engine import DiffusionEngine
from .engine import Decoding, FillRequest
from .tasks import PAPER_TASKS, TASKS, Settings, select_tasks

__all__ = ["PAPER_TASKS", "TASKS", "AutoregressiveEngine", "DataSource", "Decoding", "DiffusionEngine",
           "FillRequest", "Settings", "select_tasks"]
