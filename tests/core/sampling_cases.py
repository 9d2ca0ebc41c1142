"""Fixed sampler inputs whose outputs were recorded from the sampler before fast generation existed.

``sampling_reference.json`` holds the token ids that ``run_case`` produced with the one-block sampler of
commit 09be0ef (where today's ``confidence`` rule was still called ``topk``). The regression test runs the
same cases through the current sampler with ``block_length`` equal to the generated length and no cache,
which must reproduce them exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from llamafactory.ddm import DiffusionLM, SamplingConfig, SpecialTokens, sample
from tests.tiny import tiny_gpt2, tiny_llama

REFERENCE = Path(__file__).with_name("sampling_reference.json")
VOCAB, MASK = 48, 5


def _gpt2() -> DiffusionLM:
    return DiffusionLM(tiny_gpt2(VOCAB), SpecialTokens(mask_id=MASK, bos_id=0)).eval()


def _separated_gpt2() -> DiffusionLM:
    """The tiny GPT-2 with logits scaled up 30x, so greedy choices are far from ties on any CPU."""
    model = tiny_gpt2(VOCAB)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(30.0)
    return DiffusionLM(model, SpecialTokens(mask_id=MASK, bos_id=0)).eval()


def _llama_unshifted() -> DiffusionLM:
    return DiffusionLM(tiny_llama(VOCAB), SpecialTokens(mask_id=MASK), shift=False).eval()


def prefixed(prefix_lengths: list[int], length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose first ``prefix_lengths[row]`` tokens are given, the rest masked."""
    ids = torch.full((len(prefix_lengths), length), MASK)
    src = torch.zeros_like(ids, dtype=torch.bool)
    for row, n in enumerate(prefix_lengths):
        ids[row, :n] = torch.arange(10 + row, 10 + row + n)
        src[row, :n] = True
    return ids, src


def _infill() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    src = torch.ones_like(ids, dtype=torch.bool)
    src[0, 5:12] = False
    src[1, 8:20] = False
    return ids, src


def _seeded(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# name -> (model builder, inputs builder, config fields, generator builder); "confidence" was "topk" then.
CASES = {
    "random_sampled": (_gpt2, lambda: prefixed([2, 5, 9]), dict(steps=10), lambda: _seeded([11, 12, 13])),
    "random_shared_generator": (_gpt2, lambda: prefixed([3, 7]), dict(steps=6, temperature=1.3, top_p=None),
                                lambda: torch.Generator().manual_seed(7)),
    "confidence_sampled": (_gpt2, lambda: prefixed([2, 5, 9]),
                           dict(steps=8, strategy="confidence", temperature=1.0, top_p=None),
                           lambda: _seeded([1, 2, 3])),
    "confidence_greedy": (_separated_gpt2, lambda: prefixed([2, 6]),
                          dict(steps=18, strategy="confidence", greedy=True, top_p=None), lambda: None),
    "random_infill": (_gpt2, _infill, dict(steps=8), lambda: _seeded([4, 5])),
    "confidence_infill_top_p": (_gpt2, _infill, dict(steps=5, strategy="confidence", top_p=0.8),
                                lambda: _seeded([8, 9])),
    "llama_unshifted": (_llama_unshifted, lambda: (torch.full((2, 10), MASK), None),
                        dict(steps=3, shift=False), lambda: _seeded([0, 1])),
}


def run_case(name: str, legacy: bool = False, **extra) -> list[list[int]]:
    """Token ids of case ``name``; ``legacy`` spells the confidence rule as the old sampler named it."""
    build_model, build_inputs, fields, build_generator = CASES[name]
    fields = dict(fields, **extra)
    if legacy and fields.get("strategy") == "confidence":
        fields["strategy"] = "topk"
    torch.manual_seed(0)
    model = build_model()
    ids, src = build_inputs()
    return sample(model, ids, MASK, SamplingConfig(**fields), src_mask=src, generator=build_generator()).tokens.tolist()


def run_padded_case(legacy: bool = False, **extra) -> list[list[int]]:
    """A right-padded batch whose padding is hidden from attention through a denoiser callable."""
    model = _gpt2()
    ids, src = prefixed([4, 2], length=14)
    ids = torch.cat([ids, torch.full((2, 6), 3)], dim=1)
    src = torch.cat([src, torch.ones(2, 6, dtype=torch.bool)], dim=1)
    keep = torch.cat([torch.ones(2, 14), torch.zeros(2, 6)], dim=1).long()
    keep[1, 10:14] = 0
    ids[1, 10:14] = 3
    src[1, 10:14] = True
    denoiser = functools.partial(model, attention_mask=keep)
    config = SamplingConfig(steps=6, **extra)
    return sample(denoiser, ids, MASK, config, src_mask=src, generator=_seeded([3, 4])).tokens.tolist()
