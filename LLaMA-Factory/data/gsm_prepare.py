"""Convert GSM8K (JSON lines with ``question`` / ``answer``) into the Diffusion-of-Thought records that the
``gsm`` and ``gsm_test`` datasets of dataset_info.json read (``instruction`` / ``output``).

Each worked answer keeps only its calculator annotations and the final answer (SPEC 5):
``"<<16-3-4=9>> <<9*2=18>> #### 18"``.

    python data/gsm_prepare.py --input /path/to/gsm8k/train.jsonl --output data/gsm.json
    python data/gsm_prepare.py --input /path/to/gsm8k/test.jsonl --output data/gsm_test.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

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
            raise SystemExit(f"error: line {number}: {error}") from None
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="GSM8K JSON lines file (question, answer)")
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write (e.g. data/gsm.json)")
    args = parser.parse_args()
    if not args.input.is_file():
        raise SystemExit(f"error: {args.input} does not exist")
    records = convert(args.input.read_text(encoding="utf-8").splitlines())
    staging = args.output.with_name(f".{args.output.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(staging, args.output)
    print(f"wrote {len(records)} records to {args.output}")


if __name__ == "__main__":
    main()
