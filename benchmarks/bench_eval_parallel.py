"""Wall time of the evaluation command in 1 and in N processes (``torchrun``, CPU, gloo) on the bundled tiny
DiffuGPT, side by side in one run, and whether both wrote the same per-example records.

    python -m benchmarks.bench_eval_parallel                  # 2 processes, 48 GSM8K-style + 96 LAMBADA-style
    python -m benchmarks.bench_eval_parallel --processes 4 --examples 200

The data are written to a temporary folder in the published formats (GSM8K ``test.jsonl``, LAMBADA's
plain-text file), so nothing is downloaded. Each process runs one CPU thread. Per run it prints the wall
time of the whole command (interpreter start-up, imports and model loading included), of the evaluation
alone (the ``seconds`` of each task in ``results.json``) and the CPU time all its processes used. The
speed-up is bounded by the idle cores the machine gives the processes: on a busy machine the wall times
stay alike while the CPU time shows the work was split.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the cat sees a dog near the old river while the small bird sings over green hills and "
         "a tall man walks home with bread").split()


def write_data(folder: Path, examples: int) -> None:
    """``examples`` GSM8K questions and twice as many LAMBADA passages, deterministic."""
    (folder / "gsm8k").mkdir(parents=True)
    rows = [{"question": f"Ann has {n} pens and buys {n % 7 + 2} more. How many pens does she have?",
             "answer": f"{n} + {n % 7 + 2} = {n + n % 7 + 2}\n#### {n + n % 7 + 2}"} for n in range(examples)]
    (folder / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "lambada").mkdir()
    passages = [" ".join(WORDS[(n + k) % len(WORDS)] for k in range(12 + n % 20)) for n in range(2 * examples)]
    (folder / "lambada" / "lambada_test_plain_text.txt").write_text("\n".join(passages) + "\n")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(processes: int, data: Path, output: Path, args: argparse.Namespace) -> tuple[float, float, float]:
    """(command wall seconds, evaluation seconds, CPU seconds of all processes) of one evaluation into ``output``."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    command = [*launcher, str(REPO / "evaluation" / "eval-diffugpt.py"), "--model_name", args.model,
               "--data_dir", str(data), "--tasks", "gsm8k,lambada", "--gsm8k_max_length", str(args.length),
               "--gsm8k_steps", str(args.steps), "--batch_size", str(args.batch_size), "--device", "cpu",
               "--output_dir", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    started, cpu = time.perf_counter(), _children_cpu_seconds()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - started, _children_cpu_seconds() - cpu
    tasks = json.loads((output / "results.json").read_text())["tasks"]
    return wall, sum(entry["seconds"] for entry in tasks.values()), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "assets" / "diffugpt-tiny"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--examples", type=int, default=48, help="GSM8K questions (LAMBADA: twice as many)")
    parser.add_argument("--length", type=int, default=96, help="GSM8K prompt + answer tokens")
    parser.add_argument("--steps", type=int, default=32, help="GSM8K reverse steps")
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_data(root / "data", args.examples)
        one = run(1, root / "data", root / "one", args)
        many = run(args.processes, root / "data", root / "many", args)
        same = all((root / "one" / f"{task}.jsonl").read_bytes() == (root / "many" / f"{task}.jsonl").read_bytes()
                   for task in ("gsm8k", "lambada"))
    print(f"{args.examples} GSM8K (T={args.steps}, {args.length} tokens) + {2 * args.examples} LAMBADA examples, "
          f"batch {args.batch_size}, {os.cpu_count()} CPU cores")
    print(f"{'processes':>9} {'command s':>10} {'evaluation s':>13} {'CPU s':>7}")
    print(f"{1:>9} {one[0]:>10.1f} {one[1]:>13.1f} {one[2]:>7.1f}")
    print(f"{args.processes:>9} {many[0]:>10.1f} {many[1]:>13.1f} {many[2]:>7.1f}")
    print(f"speed-up 1 -> {args.processes}: command {one[0] / many[0]:.2f}x, evaluation {one[1] / many[1]:.2f}x; "
          f"identical records: {same}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
