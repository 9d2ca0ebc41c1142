"""Convert GSM8K (JSON lines with ``question`` / ``answer``) into the Diffusion-of-Thought records that the
``gsm`` and ``gsm_test`` datasets of dataset_info.json read (``instruction`` / ``output``).

Each worked answer keeps only its calculator annotations and the final answer (docs/design.md#supervised-fine-tuning-layout-ddm-sft):
``"<<16-3-4=9>> <<9*2=18>> #### 18"``.

    python data/gsm_prepare.py --input /path/to/gsm8k/train.jsonl --output data/gsm.json
    python data/gsm_prepare.py --input /path/to/gsm8k/test.jsonl --output data/gsm_test.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from llamafactory.entry_points import run_command
from llamafactory.errors import UserInputError
from llamafactory.utils.files import atomic_write_text

EQUATION = re.compile(r"<<[^<>]*>>")


def to_diffusion_of_thought(answer: str) -> str:
    """``"... <<a=b>> ... #### n"`` -> ``"<<a=b>> #### n"``."""
    if "####" not in answer:
        raise ValueError(f"answer has no '#### n' final answer: {answer[:80]!r}")
    final = answer.rsplit("####", 1)[1].strip()
    return " ".join(EQUATION.findall(answer) + [f"#### {final}"])


def convert(lines: list[str]) -> list[dict[str, str]]:
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        try:
            records.append({"instruction": item["question"].strip(), "output": to_diffusion_of_thought(item["answer"])})
        except (KeyError, ValueError) as error:
            raise UserInputError(f"line {number}: {error}") from None
    return records


def write(input_path: Path, output_path: Path) -> None:
    if not input_path.is_file():
        raise UserInputError(f"--input {input_path} does not exist")
    records = convert(input_path.read_text(encoding="utf-8").splitlines())
    if not records:
        raise UserInputError(f"--input {input_path} holds no GSM8K records")
    atomic_write_text(output_path, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(records)} records to {output_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="GSM8K JSON lines file (question, answer)")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write (e.g. data/gsm.json)")
    args = parser.parse_args()
    return run_command(lambda: write(args.input, args.output))


if __name__ == "__main__":
    sys.exit(main())
