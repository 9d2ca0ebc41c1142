"""Export a ``ddm`` checkpoint in the Hugging Face-native format (docs/design.md#hf-native-format) as the
bundled default model.

The folder is what ``llamafactory-cli export`` writes: a ``diffugpt`` config.json (bidirectional, with its
sampling length and special token ids), one ``model.safetensors`` named as GPT-2's, generation_config.json,
the tokenizer files and a model card; ``python inf_diffugpt.py --model_name <folder>`` and
``AutoModel.from_pretrained(<folder>)`` (after ``import llamafactory``) load it offline.

    python export.py --checkpoint output/tiny/ddm --out ../assets/diffugpt-tiny
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from llamafactory.ddm import load_causal_lm
from llamafactory.ddm.hf.export import export_native
from llamafactory.errors import UserInputError

logger = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024

DESCRIPTION = """A tiny DiffuGPT ({params:.2f}M parameters, GPT-2 shaped, {layers} layers, width {width}, vocabulary {vocab})
built on CPU in minutes by `LLaMA-Factory/examples/tiny/run.sh`: AR pre-training (`pt`) on a synthetic
corpus, then adaptation to diffusion (`ddm`, attention-mask annealing, shift). It knows only the corpus of
`examples/tiny/pipeline/synthetic.py` — capitals, echoed colours, one-digit sums, reversals and templated
sentences — and is meant for trying the project offline, not for real text. Mask token `<mask>`, sampling
length {length} tokens.

    python inf_diffugpt.py --model_name {path}"""


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def export(checkpoint: Path, out: Path, length: int) -> Path:
    """Write ``checkpoint`` to ``out`` (replaced atomically) in the Hugging Face-native format."""
    model = load_causal_lm(checkpoint)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if weight_bytes > MAX_BYTES:
        raise UserInputError(
            f"{checkpoint} holds {weight_bytes / 2**20:.1f} MiB of weights, over the {MAX_BYTES // 2**20} MiB "
            "limit for bundled models"
        )
    config, path = model.config, f"assets/{out.name}"
    description = DESCRIPTION.format(params=model.num_parameters() / 1e6, layers=config.n_layer, width=config.n_embd,
                                     vocab=config.vocab_size, length=length, path=path)
    return export_native(checkpoint, out, overwrite=True, generation_length=length, description=description,
                         card_path=path)


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
