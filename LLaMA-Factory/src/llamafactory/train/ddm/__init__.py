"""The diffusion stages (ddm, ddm-sft) on HF Trainer, using the core loss, annealing and samplers."""

from .trainer import DiffusionTrainer
from .workflow import run_ddm

__all__ = ["DiffusionTrainer", "run_ddm"]
