"""The GPU throughput benchmark of the trainer runs end to end in its --tiny form."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_trainer_mfu.py"


def test_tiny_benchmark_reports_throughput_and_mfu_for_both_variants(capsys):
    spec = importlib.util.spec_from_file_location("bench_trainer_mfu", BENCHMARK)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--tiny", "--steps", "1", "--warmup", "0", "--peak-tflops", "1.0"])
    assert set(results) == {"ddm", "ar"}
    for row in results.values():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
    out = capsys.readouterr().out
    assert "ddm / ar throughput ratio:" in out and "MFU" in out
