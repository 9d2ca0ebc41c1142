"""Export a ``ddm`` checkpoint in the DiffuGPT Hub layout (docs/design.md#checkpoint-layouts) as the bundled default model.

The folder gets the GPT-2 ``config.json`` (bidirectional, with its sampling length), one
``model.safetensors`` with ``embed_tokens.*`` / ``denoise_model.*`` keys, the tokenizer files and a
short model card; ``python inf_diffugpt.py --model_name <folder>`` samples from it offline.

    python export.py --checkpoint output/tiny/ddm --out ../assets/diffugpt-tiny
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from llamafactory.ddm import load_causal_lm, load_tokenizer, save_diffusion_checkpoint
from llamafactory.errors import UserInputError

logger = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024

MODEL_CARD = """# {name}

A tiny DiffuGPT ({params:.2f}M parameters, GPT-2 shaped, {layers} layers, width {width}, vocabulary {vocab})
built on CPU in minutes by `LLaMA-Factory/examples/tiny/run.sh`: AR pre-training (`pt`) on a synthetic
corpus, then adaptation to diffusion (`ddm`, attention-mask annealing, shift). It knows only the corpus of
`examples/tiny/pipeline/synthetic.py` — capitals, echoed colours, one-digit sums, reversals and templated
sentences — and is meant for trying the project offline, not for real text.

Layout: the DiffuGPT Hub layout (wrapper keys `embed_tokens.*` / `denoise_model.*`, tied head), mask token
`<mask>`, sampling length {length} tokens.

    python inf_diffugpt.py --model_name {path}
"""


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def export(checkpoint: Path, out: Path, length: int) -> Path:
    """Write the wrapper layout of ``checkpoint`` to ``out`` (atomically) with its tokenizer and card."""
    model = load_causal_lm(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    limit = model.config.n_positions
    if not 0 < length <= limit:
        raise UserInputError(f"--length {length} must be between 1 and the model's {limit} positions")
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if weight_bytes > MAX_BYTES:
        raise UserInputError(
            f"{checkpoint} holds {weight_bytes / 2**20:.1f} MiB of weights, over the {MAX_BYTES // 2**20} MiB "
            "limit for bundled models"
        )
    save_diffusion_checkpoint(model, out, layout="wrapper", tokenizer=tokenizer, generation_length=length)
    config = model.config
    (out / "README.md").write_text(MODEL_CARD.format(
        name=out.name, params=model.num_parameters() / 1e6, layers=config.n_layer, width=config.n_embd,
        vocab=config.vocab_size, length=length, path=f"assets/{out.name}",
    ))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="output_dir of the ddm stage")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (replaced atomically)")
    parser.add_argument("--length", type=int, default=64, help="sampling length stored in the config (default 64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = export(args.checkpoint, args.out, args.length)
    except UserInputError as error:
        raise SystemExit(f"error: {error}") from None
    logger.info("exported %s (%.1f MiB)", out, folder_bytes(out) / 2**20)


if __name__ == "__main__":
    main()
