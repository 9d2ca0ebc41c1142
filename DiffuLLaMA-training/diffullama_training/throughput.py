"""Training throughput: tokens per second and model FLOPs utilisation (MFU).

Model FLOPs per token follow the PaLM appendix: ``6 * N`` for the weight matmuls (forward + backward;
``N`` excludes the input embedding, a lookup) plus ``12 * layers * hidden * length`` for attention
scores and values. Attention is bidirectional, so no causal discount. Activation recomputation
(gradient checkpointing) is not counted: this is model, not hardware, FLOPs utilisation.
"""

from __future__ import annotations

import time

import torch
from torch import nn

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched against the device name.
PEAK_BF16_TFLOPS = (("GH200", 989.0), ("H200", 989.0), ("H100", 989.0), ("H800", 989.0), ("A100", 312.0),
                    ("A800", 312.0), ("L40S", 362.0), ("A6000", 155.0), ("A10", 125.0))


def detect_peak_tflops(device: torch.device) -> float | None:
    """bf16 peak of a known CUDA device, else None (pass --peak-tflops for MFU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def flops_per_token(model: nn.Module, seq_length: int) -> float:
    """Training FLOPs (forward + backward) per token of a decoder at this sequence length."""
    config = model.config
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    matmul_params = sum(_numel(p) for p in model.parameters())
    if head is None or head.weight is not embedding:
        matmul_params -= _numel(embedding)  # a lookup; a tied head (same tensor) is a matmul and stays
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq_length
    return 6.0 * matmul_params + attention


def _numel(parameter: torch.Tensor) -> int:
    """Full size even for a DeepSpeed ZeRO-3 partitioned parameter (``ds_numel``)."""
    return int(getattr(parameter, "ds_numel", parameter.numel()))


class ThroughputMeter:
    """Tokens/s and MFU over the interval since the previous ``report``."""

    def __init__(self, flops_per_token: float, peak_tflops: float | None, num_devices: int) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_tflops * 1e12 * num_devices if peak_tflops else None
        self._start = time.perf_counter()
        self._tokens = 0

    def add(self, tokens: int) -> None:
        self._tokens += tokens

    def report(self) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        tokens_per_s = self._tokens / elapsed
        self._start, self._tokens = now, 0
        result = {"tokens_per_s": tokens_per_s}
        if self.peak_flops:
            result["mfu"] = tokens_per_s * self.flops_per_token / self.peak_flops
        return result
