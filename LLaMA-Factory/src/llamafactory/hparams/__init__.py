"""Configuration: the argument dataclasses and ``get_train_args`` (parse, map old keys, validate)."""

from .data_args import DataArguments
from .finetuning_args import DIFFUSION_STAGES, STAGES, FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ModelArguments
from .parser import TrainArgs, get_train_args, read_args
from .training_args import TrainingArguments

__all__ = [
    "DIFFUSION_STAGES", "STAGES", "DataArguments", "FinetuningArguments", "GeneratingArguments", "ModelArguments",
    "TrainArgs", "TrainingArguments", "get_train_args", "read_args",
]
