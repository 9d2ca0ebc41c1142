"""The quick-start sampling command behind ``inf_diffugpt.py`` and ``inf_diffullama.py``.

Loads a released or self-trained diffusion checkpoint and prints an unconditional and a
prefix-conditioned sample, as the original scripts did, with booleans that really parse and errors
reported as one line; after each, the denoiser evaluations (NFE) per sample and the tokens generated per
second. Fast generation (blocks, parallel rules, a cache) is off unless its flags ask for it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .ddm import (
    SamplingConfig,
    check_window,
    generation_length,
    load_diffusion_lm,
    sample,
    start_token_id,
    with_start_token,
)
from .entry_points import (
    add_bool_flag,
    add_model_arguments,
    attention_report,
    check_attention_implementation,
    resolve_device,
    resolve_dtype,
    run_command,
)
from .errors import UserInputError
from .sampler_flags import SCRIPT_FLAGS, SamplerFlags

logger = logging.getLogger("llamafactory.quickstart")
# Every sampler setting is a flag, the original's three under the original scripts' names.
FLAGS = SamplerFlags(spelling=SCRIPT_FLAGS)



@dataclass(frozen=True)
class Defaults:
    """Per-model-family defaults of the quick-start scripts (docs/design.md#sampling); ``logits_temp`` replaces
    the schema's temperature."""

    description: str
    model_name: str
    logits_temp: float
    base_model_name: str | None = None


DIFFUGPT = Defaults("Sample from a DiffuGPT checkpoint.", "diffusionfamily/diffugpt-s", 0.95, "gpt2")
DIFFULLAMA = Defaults("Sample from a DiffuLLaMA checkpoint.", "diffusionfamily/diffullama", 0.9)


def build_parser(defaults: Defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=defaults.description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(parser, model_name=defaults.model_name, base_model_name=defaults.base_model_name)
    add_bool_flag(parser, "--shift", True, "output i predicts token i+1 (true for all released models)")
    FLAGS.add_to(parser, defaults={"temperature": defaults.logits_temp})
    add_bool_flag(parser, "--verbose", False, "print the sequence after every step")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prompt", default="Today is a wonderful day,", help="prefix for the conditional sample")
    parser.add_argument("--gen_len", type=int, default=None,
                        help="sequence length (default: the checkpoint's task_specific_params max_length)")
    parser.add_argument("--num_samples", type=int, default=1, help="samples of each kind")
    return parser


def _validate(args: argparse.Namespace) -> None:
    if args.num_samples < 1:
        raise UserInputError(f"--num_samples must be >= 1, got {args.num_samples}")
    if args.gen_len is not None and args.gen_len < 2:
        raise UserInputError(f"--gen_len must be >= 2, got {args.gen_len}")


def sampling_config(args: argparse.Namespace) -> SamplingConfig:
    """The flags as core sampler settings, checked before anything is loaded."""
    config = SamplingConfig(**FLAGS.values(args), shift=args.shift, record_history=args.verbose)
    config.validate()
    return config


def _generate(model, prefix: list[int], length: int, config: SamplingConfig, args) -> None:
    """Sample ``--num_samples`` rows after ``prefix`` and print them, then the NFE and the speed."""
    rows = args.num_samples
    input_ids = torch.full((rows, length), model.mask_id, dtype=torch.long)
    input_ids[:, : len(prefix)] = torch.tensor(prefix)
    src_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    src_mask[:, : len(prefix)] = True
    generators = [torch.Generator(model.device).manual_seed(args.seed + i) for i in range(rows)]
    began = time.perf_counter()
    with tqdm(total=config.steps, desc="denoising", leave=False, file=sys.stderr) as bar:
        output = sample(model, input_ids.to(model.device), model.mask_id, config,
                        src_mask=src_mask.to(model.device), generator=generators, progress=bar.update)
    seconds = time.perf_counter() - began
    if args.verbose:
        for step, tokens in enumerate(output.history):
            print(f"[step {step}] {model_text(args.tokenizer, tokens[0].tolist())}")
    for tokens in output.tokens.tolist():
        print(model_text(args.tokenizer, tokens))
    print(f"(NFE per sample: {', '.join(str(n) for n in output.nfe.tolist())}; "
          f"{rows * (length - len(prefix)) / seconds:.1f} tokens/s)")


def model_text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def run(args: argparse.Namespace) -> None:
    _validate(args)
    config = sampling_config(args)
    device = resolve_device(args.device)
    check_attention_implementation(args.flash_attn, device)
    model, tokenizer = load_diffusion_lm(
        args.model_name, base_model=args.base_model_name, adapters=args.adapter, dtype=resolve_dtype(args.dtype, device),
        attn_implementation=args.flash_attn, device=device, shift=args.shift, trust_remote_code=args.trust_remote_code,
    )
    args.tokenizer = tokenizer
    length = args.gen_len or generation_length(model.config)
    check_window(model.config, length, f"--gen_len {length}")
    start = start_token_id(tokenizer)
    prefix = with_start_token(tokenizer, tokenizer.encode(args.prompt, add_special_tokens=False))
    if len(prefix) >= length:
        raise UserInputError(
            f"the prompt is {len(prefix)} tokens (with the start token) but the generation length is {length}; "
            "use a shorter --prompt or a larger --gen_len"
        )
    print(attention_report(args.flash_attn), file=sys.stderr)
    print("=" * 20, f"Generating {length} tokens with T={config.steps} on {device}")
    print("=" * 20, "Unconditional generation")
    _generate(model, [start], length, config, args)
    print("=" * 20, f"Prefix generation: {args.prompt!r}")
    _generate(model, prefix, length, config, args)


def main(defaults: Defaults, argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one ``error:`` line and return 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(defaults).parse_args(argv)
    return run_command(lambda: run(args))
