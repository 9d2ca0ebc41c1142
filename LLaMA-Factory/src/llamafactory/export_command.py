"""``llamafactory-cli export``: any checkpoint we load -> the Hugging Face-native format
(docs/design.md#hf-native-format)."""

from __future__ import annotations

import argparse

from .entry_points import DTYPES, add_bool_flag, run_command


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamafactory-cli export",
        description="Write a diffusion checkpoint (released wrapper or HF layout, a training output, LoRA adapters "
                    "merged) as a Hugging Face-native diffugpt / diffullama model.",
    )
    parser.add_argument("--model_name_or_path", required=True, help="checkpoint folder or Hub id to export")
    parser.add_argument("--export_dir", required=True, help="folder to write (must be empty unless --overwrite)")
    parser.add_argument("--adapter_name_or_path", action="append", default=[],
                        help="PEFT LoRA adapter(s) to merge first (comma-separated or repeated)")
    parser.add_argument("--base_model", default=None,
                        help="base AR model, for its config/tokenizer when the checkpoint lacks them")
    add_bool_flag(parser, "--self_contained", False,
                  "also write the modeling code (auto_map), for trust_remote_code=True without this package "
                  "(also spelled --self-contained)")
    parser.add_argument("--self-contained", dest="self_contained", action="store_const", const=True,
                        help=argparse.SUPPRESS)
    add_bool_flag(parser, "--overwrite", False, "replace a non-empty export_dir")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="weights' dtype in the export (auto: as loaded)")
    parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard")
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)

    def export() -> None:
        from .ddm.hf.export import export_native

        adapters = [name for item in args.adapter_name_or_path for name in item.split(",") if name.strip()]
        directory = export_native(
            args.model_name_or_path, args.export_dir, base_model=args.base_model, adapters=adapters or None,
            self_contained=args.self_contained, overwrite=args.overwrite,
            dtype=None if args.dtype == "auto" else DTYPES[args.dtype], max_shard_size=args.max_shard_size,
        )
        print(f"exported {args.model_name_or_path} to {directory}")

    return run_command(export)
