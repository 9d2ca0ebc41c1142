"""The command line shared by ``eval-diffugpt.py``, ``eval-diffullama.py`` and ``eval-llm.py``.

Order of work: parse and check the flags, load every selected task's data (so a missing file fails in
seconds), then load the model, evaluate task by task, and print the paper-layout table. Device, dtype,
attention and boolean flags are read by the quick-start command's helpers, so both commands agree.
Under ``torchrun`` / ``accelerate launch`` every process evaluates its share of each task on its own
device (``cuda:LOCAL_RANK``) and the main process writes the results (``dlm_eval.runner``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from llamafactory.ddm import ESTIMATORS, apply_adapters, load_diffusion_lm, load_tokenizer
from llamafactory.entry_points import (
    add_bool_flag,
    add_model_arguments,
    check_attention_implementation,
    resolve_device,
    resolve_dtype,
    run_command,
)
from llamafactory.errors import UserInputError
from llamafactory.sampler_flags import SCRIPT_FLAGS, SamplerFlags
from llamafactory.utils.distributed import SINGLE_PROCESS, Launch, close_process_group, init_object_group
from llamafactory.utils.hub import resolve_checkpoint_dir

from .ar_engine import AutoregressiveEngine
from .data import DataSource
from .diffusion_engine import DiffusionEngine
from .engine import Decoding, Engine
from .runner import check_results_dir, load_examples, run_identity, run_tasks
from .tasks import PROMPT_FORMATS, TASKS, Settings, select_tasks

logger = logging.getLogger("dlm_eval")
# The sampler flags of the diffusion families: every setting but the step count, which each task sets
# (``--diffusion_steps`` is the scoring T here, ``--gsm8k_steps`` GSM8K's).
SAMPLER_FLAGS = SamplerFlags(spelling=SCRIPT_FLAGS, exclude=("steps",))



@dataclass(frozen=True)
class Family:
    """Defaults of one evaluation script: the original script's temperature and its GSM8K config's."""

    description: str
    kind: str  # "diffusion" or "autoregressive"
    model_name: str
    base_model_name: str | None = None
    logits_temp: float = 0.95
    gsm8k_temp: float = 1.0

    def decoding(self) -> Decoding:
        """The family's sampler defaults, before task defaults and flags."""
        return Decoding(temperature=self.logits_temp)


DIFFUGPT = Family("Evaluate a DiffuGPT checkpoint on the paper's benchmarks.", "diffusion",
                  "diffusionfamily/diffugpt-s", "gpt2", 0.95, 0.98)
DIFFULLAMA = Family("Evaluate a DiffuLLaMA checkpoint on the paper's benchmarks.", "diffusion",
                    "diffusionfamily/diffullama", None, 0.9, 1.0)
LLM = Family("Evaluate an autoregressive baseline on the paper's benchmarks (multiple choice by "
             "log-likelihood, generation by greedy decoding, infilling from the prefix only).", "autoregressive",
             "gpt2")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it has none or its help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(family: Family) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=family.description, formatter_class=_HelpFormatter)
    model = parser.add_argument_group("model")
    add_model_arguments(model, model_name=family.model_name, base_model_name=family.base_model_name,
                        diffusion=family.kind == "diffusion")
    run = parser.add_argument_group("run")
    run.add_argument("--tasks", default="all", help=f"'all' (the paper's nine) or a comma list of: {', '.join(TASKS)}")
    run.add_argument("--data_dir", default=None,
                     help="local data in the published formats (layout: docs/data.md); default: the Hub sets")
    run.add_argument("--limit", type=int, default=None,
                     help="first N examples of each task (default: all; the original's subsets: ROCStories 1,000, "
                          "TriviaQA and SQuAD 2,000)")
    run.add_argument("--batch_size", type=int, default=32, help="rows per forward pass; results do not depend on it")
    run.add_argument("--seed", type=int, default=0, help="seed of noise levels and per-example samplers")
    run.add_argument("--output_dir", default=None, help="default: output/eval/<model name>")
    add_bool_flag(run, "--resume", True,
                  "continue an unfinished run of the same model, tasks and settings in --output_dir and skip "
                  "tasks it finished (default true; --no_resume or --resume false starts them over)")
    run.add_argument("--no_resume", dest="resume", action="store_false", help="the same as --resume false")
    run.add_argument("--save_every", type=int, default=256,
                     help="each process saves its finished examples after every N (what a kill can lose)")
    if family.kind == "diffusion":
        sampling = parser.add_argument_group("diffusion")
        sampling.add_argument("--diffusion_steps", type=int, default=32,
                              help="T for multiple-choice scoring, ROCStories and HumanEval "
                                   "(LAMBADA and TriviaQA use T = generated length)")
        SAMPLER_FLAGS.add_to(sampling, defaults=None, default_notes={
            "temperature": f"{family.logits_temp}; LAMBADA 1.0, GSM8K {family.gsm8k_temp}",
            "top_p": "none, as the original", "greedy": "false; GSM8K true",
            "strategy": "topk, the original evaluation's"})
        sampling.add_argument("--gsm8k_steps", type=int, default=64, help="T for GSM8K")
        sampling.add_argument("--scorer", choices=ESTIMATORS, default="original",
                              help="multiple-choice likelihood estimator: original (each token masked with "
                                   "probability t/T) or exact (ceil(n t/T) tokens; lower variance)")
    tasks = parser.add_argument_group("task options")
    tasks.add_argument("--prompt_format", choices=PROMPT_FORMATS, default="original",
                       help="multiple-choice prompts: original (the original scripts' strings and tokenization) "
                            "or harness (lm-evaluation-harness conventions, partial scoring for WinoGrande)")
    tasks.add_argument("--triviaqa_extra_tokens", type=int, default=0,
                       help="TriviaQA generates the longest accepted answer's length plus this many tokens")
    tasks.add_argument("--gsm8k_max_length", type=int, default=256,
                       help="GSM8K prompt + answer length (the fine-tuning cutoff_len)")
    tasks.add_argument("--code_timeout", type=float, default=10.0, help="seconds per HumanEval program")
    tasks.add_argument("--code_workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                       help="HumanEval programs run in parallel")
    return parser


def _check(args: argparse.Namespace) -> None:
    positive = {"--batch_size": args.batch_size, "--code_workers": args.code_workers, "--save_every": args.save_every,
                "--diffusion_steps": getattr(args, "diffusion_steps", 1),
                "--gsm8k_steps": getattr(args, "gsm8k_steps", 1)}
    if args.limit is not None:
        positive["--limit"] = args.limit
    for flag, value in positive.items():
        if value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    if args.triviaqa_extra_tokens < 0:
        raise UserInputError(f"--triviaqa_extra_tokens must be >= 0, got {args.triviaqa_extra_tokens}")
    if args.gsm8k_max_length < 8:
        raise UserInputError(f"--gsm8k_max_length must be >= 8, got {args.gsm8k_max_length}")
    if args.code_timeout <= 0:
        raise UserInputError(f"--code_timeout must be > 0, got {args.code_timeout}")


def settings_from(args: argparse.Namespace, family: Family) -> Settings:
    """The run's settings; sampler flags the user set become the ``Settings`` field of that name, or else an
    entry of its ``fast_generation``."""
    given = SAMPLER_FLAGS.values(args, given_only=True) if family.kind == "diffusion" else {}
    named = {f.name for f in fields(Settings)}
    return Settings(
        seed=args.seed, diffusion_steps=getattr(args, "diffusion_steps", 32),
        scorer=getattr(args, "scorer", "original"), prompt_format=args.prompt_format,
        **{name: value for name, value in given.items() if name in named},
        fast_generation={name: value for name, value in given.items() if name not in named},
        triviaqa_extra_tokens=args.triviaqa_extra_tokens,
        gsm8k_steps=getattr(args, "gsm8k_steps", 64), gsm8k_max_length=args.gsm8k_max_length,
        gsm8k_temperature=family.gsm8k_temp, code_timeout=args.code_timeout, code_workers=args.code_workers,
    )


def load_engine(family: Family, args: argparse.Namespace, launch: Launch = SINGLE_PROCESS) -> Engine:
    """The model named by the flags on this process's device, wrapped as the engine its family evaluates with."""
    device = launch.device(resolve_device(args.device))
    dtype = resolve_dtype(args.dtype, device)
    check_attention_implementation(args.flash_attn, device)
    if family.kind == "diffusion":
        model, tokenizer = load_diffusion_lm(
            args.model_name, base_model=args.base_model_name, adapters=args.adapter, dtype=dtype,
            attn_implementation=args.flash_attn, device=device, trust_remote_code=args.trust_remote_code,
        )
        return DiffusionEngine(model, tokenizer, batch_size=args.batch_size, decoding=family.decoding())
    return AutoregressiveEngine(*load_causal_baseline(args, device, dtype), batch_size=args.batch_size)


def load_causal_baseline(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """An ordinary causal LM (+ adapters) and its tokenizer; a checkpoint marked bidirectional is made causal."""
    from transformers import AutoModelForCausalLM

    directory = resolve_checkpoint_dir(args.model_name)
    tokenizer = load_tokenizer(directory, trust_remote_code=args.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation=args.flash_attn,
                                                 trust_remote_code=args.trust_remote_code)
    if getattr(model.config, "is_causal", True) is False:
        logger.warning("%s is marked bidirectional (a diffusion checkpoint); evaluating it causally",
                       args.model_name)
        model.config.is_causal = True
    if args.adapter:
        model = apply_adapters(model, args.adapter)
    return model.to(device).eval(), tokenizer


def _default_output_dir(model_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(model_name).strip("/")).strip("_") or "model"
    return Path("output") / "eval" / slug


def run(family: Family, args: argparse.Namespace, launch: Launch = SINGLE_PROCESS) -> dict[str, Any]:
    _check(args)
    settings = settings_from(args, family)
    if family.kind == "diffusion":
        settings.decoding(family.decoding()).validate()
    tasks = select_tasks(args.tasks)
    examples = load_examples(tasks, DataSource(args.data_dir), args.limit)
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(args.model_name)
    config = {key: value for key, value in vars(args).items()}
    identity = run_identity(config, settings, family.decoding())
    check_results_dir(output_dir, family.kind, config, identity=identity, tasks=tasks, resume=args.resume)
    engine = load_engine(family, args, launch)
    summary = run_tasks(engine, tasks, examples, settings, output_dir=output_dir,
                        model=Path(str(args.model_name)).name or str(args.model_name), config=config,
                        identity=identity, launch=launch, resume=args.resume, save_every=args.save_every)
    if launch.is_main:
        print(summary["table"])
        print(f"results: {output_dir / 'results.json'}")
    return summary


def _evaluate(family: Family, args: argparse.Namespace) -> dict[str, Any]:
    """``run`` in every process of a launch: a gloo group gathers the results; it is closed on the way out."""
    launch = Launch.from_env()
    if not launch.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    init_object_group(launch)
    try:
        summary = run(family, args, launch)
    except BaseException:
        close_process_group(synchronize=False)  # another process may be stuck in a collective: no barrier
        raise
    close_process_group(synchronize=True)
    return summary


def main(family: Family, argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one ``error:`` line and return 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(family).parse_args(argv)
    return run_command(lambda: _evaluate(family, args))
