"""The GPU throughput benchmark of the trainer runs end to end in its --tiny form, and its MFU is the
model-FLOP count of the shape over the peak."""

from __future__ import annotations

import pytest

from benchmarks import bench_trainer_mfu as bench


def _tiny_shape_flops_per_token(block: int) -> int:
    """6 x matmul weights + 12 x layers x hidden x length, counted by hand for the benchmark's --tiny LLaMA."""
    vocab, hidden, inner, layers = 512, 64, 128, 2  # 4 heads, 4 key-value heads: k and v are hidden wide
    per_layer = 4 * hidden * hidden + 3 * hidden * inner + 2 * hidden  # q, k, v, o; gate, up, down; two norms
    matmul_weights = layers * per_layer + hidden + vocab * hidden  # final norm, untied head (embedding excluded)
    return 6 * matmul_weights + 12 * layers * hidden * block


def test_tiny_benchmark_reports_throughput_and_mfu_from_the_shape(capsys):
    results = bench.main(["--tiny", "--steps", "1", "--warmup", "0", "--peak-tflops", "1.0", "--seq-length", "63"])
    assert set(results) == {"ddm", "ar"}
    for row in results.values():
        assert row["flops_per_token"] == _tiny_shape_flops_per_token(64)
        assert row["tokens_per_s"] > 0
        assert row["mfu"] == pytest.approx(row["tokens_per_s"] * row["flops_per_token"] / 1e12, rel=1e-9)
    out = capsys.readouterr().out
    assert "ddm / ar throughput ratio:" in out and "MFU" in out and "2 layers x 64 hidden" in out
