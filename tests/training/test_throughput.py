"""Model FLOPs per token and the MFU arithmetic."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForCausalLM

from diffullama_training import throughput
from diffullama_training.throughput import ThroughputMeter, detect_peak_tflops, flops_per_token
from tests.tiny import tiny_llama


def _tiny_llama_matmul_params(vocab: int) -> int:
    """Weights of the tiny LLaMA that multiply activations, counted from its shape by hand."""
    hidden, inner, layers, kv_width = 32, 64, 2, 2 * 8  # 2 key-value heads of dim 32 / 4
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * inner + 2 * hidden  # q,o; k,v; mlp; norms
    return layers * per_layer + hidden + vocab * hidden  # final norm, untied head


def test_flops_per_token_counts_weights_and_bidirectional_attention():
    model = tiny_llama(400)
    expected = 6 * _tiny_llama_matmul_params(400) + 12 * 2 * 32 * 2049
    assert flops_per_token(model, 2049) == expected


def test_a_tied_head_is_still_counted_once_as_a_matmul():
    untied = tiny_llama(400)
    config = copy.deepcopy(untied.config)
    config.tie_word_embeddings = True
    tied = LlamaForCausalLM(config)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert flops_per_token(tied, 16) == flops_per_token(untied, 16)


def test_meter_reports_tokens_per_second_and_mfu(monkeypatch):
    clock = iter([100.0, 102.0, 103.0, 200.0, 201.0])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    meter = ThroughputMeter(flops_per_token=1e9, peak_tflops=10.0, num_devices=4)
    meter.add(40_000)
    assert meter.report() == pytest.approx({"tokens_per_s": 20_000.0, "mfu": 20_000 * 1e9 / 40e12})
    meter.add(1_000)
    assert meter.report()["tokens_per_s"] == pytest.approx(1_000.0)  # the interval restarts at each report
    assert "mfu" not in ThroughputMeter(1e9, None, 1).report()


def test_no_peak_is_guessed_for_a_cpu():
    assert detect_peak_tflops(torch.device("cpu")) is None
