"""Block-causal attention (docs/design.md#block-diffusion): the masks match their definition, padding never moves
a block boundary, a block-size model (in memory, saved, exported with and without the package) never looks at
later blocks while looking both ways inside its block, eager equals sdpa, and unusable settings are one error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from llamafactory.ddm import DiffusionLM, load_diffusion_lm, make_bidirectional, save_diffusion_checkpoint
from llamafactory.ddm.attention import block_causal_mask, check_block_kernel, noisy_clean_mask, position_ids
from llamafactory.ddm.checkpoints import recorded_block_size
from llamafactory.ddm.hf.export import export_native
from llamafactory.ddm.tokens import SpecialTokens
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer
from tests.tolerance import assert_tensors_close

BLOCK, LENGTH = 4, 11
BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
BLOCKED = torch.finfo(torch.float32).min


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, 0] == 0


def test_block_causal_mask_follows_position_ids_and_hides_padding():
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]])
    positions = position_ids(attention, attention.shape, torch.device("cpu"))
    allowed = _allowed(block_causal_mask(positions, 3, attention_mask=attention))
    for row in range(2):
        for q in range(8):
            for k in range(8):
                expected = bool(attention[row, k]) and positions[row, k] // 3 <= positions[row, q] // 3
                assert allowed[row, q, k].item() == (expected or q == k), (row, q, k)
    # left padding shifts columns, not blocks: row 0's first block is columns 2..4 (positions 0..2)
    assert allowed[0, 2, 4] and not allowed[0, 2, 5] and allowed[0, 5, 2]


def test_noisy_clean_mask_by_definition_with_annealing_inside_blocks():
    length = 7
    positions = torch.arange(length)[None]
    opened = torch.rand(length, length, generator=torch.Generator().manual_seed(0)) < 0.5
    opened |= torch.ones(length, length, dtype=torch.bool).tril()
    allowed = _allowed(noisy_clean_mask(positions, 3, opened=opened))[0]
    assert allowed.shape == (2 * length, 2 * length)
    for q in range(2 * length):
        for k in range(2 * length):
            qb, kb, qn, kn = (q % length) // 3, (k % length) // 3, q < length, k < length
            inside = qb == kb and bool(opened[q % length, k % length])
            if qn and kn:
                expected = inside
            elif qn:  # noisy query, clean key
                expected = kb < qb
            elif kn:  # clean query, noisy key
                expected = False
            else:
                expected = kb < qb or inside
            assert allowed[q, k].item() == (expected or q == k), (q, k)


def _denoiser(name: str, attn: str = "sdpa", block_size: int | None = BLOCK) -> DiffusionLM:
    model = make_bidirectional(BUILDERS[name](60, seed=1))
    model.set_attn_implementation(attn)
    return DiffusionLM(model, SpecialTokens(mask_id=7, pad_id=2, eos_id=3), block_size=block_size).eval()


def assert_block_causal(forward, vocab: int = 60, padding: int = 0) -> None:
    """Changing block 1's tokens moves no logit of block 0 and moves block 1's; with left padding of
    ``padding`` columns (blocks follow positions, not columns)."""
    ids = torch.randint(8, vocab, (1, LENGTH), generator=torch.Generator().manual_seed(3))
    attention = (torch.arange(LENGTH)[None] >= padding).long()
    changed = ids.clone()
    first, second = padding + BLOCK, padding + 2 * BLOCK
    changed[0, first + 1] = (changed[0, first + 1] + 1 - 8) % (vocab - 8) + 8
    with torch.no_grad():
        before, after = forward(ids, attention), forward(changed, attention)
    assert_tensors_close(after[:, padding:first], before[:, padding:first])
    assert (after[:, first:second] - before[:, first:second]).abs().max() > 1e-4  # both ways inside the block
    assert (after[:, first] - before[:, first]).abs().max() > 1e-4  # the block's first column sees its later ones


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("padding", [0, 2])
def test_block_size_model_never_looks_ahead(name, padding):
    model = _denoiser(name)
    assert_block_causal(lambda ids, attention: model(ids, attention), padding=padding)
    full = _denoiser(name, block_size=None)
    ids = torch.randint(8, 60, (1, LENGTH))
    changed = ids.clone()
    changed[0, -1] = 8 if ids[0, -1] != 8 else 9
    with torch.no_grad():
        assert (full(changed)[:, 0] - full(ids)[:, 0]).abs().max() > 1e-4  # full-sequence sees everything


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_eager_equals_sdpa(name):
    ids = torch.randint(8, 60, (2, LENGTH), generator=torch.Generator().manual_seed(4))
    attention = torch.ones_like(ids)
    attention[1, :3] = 0
    with torch.no_grad():
        eager = _denoiser(name, "eager")(ids, attention)
        sdpa = _denoiser(name, "sdpa")(ids, attention)
    keep = attention.bool()
    assert_tensors_close(eager[keep], sdpa[keep])


@pytest.mark.parametrize(("attn", "model_type"), [("flash_attention_2", "llama"), ("flash_attention_2", "gpt2"),
                                                  ("flex_attention", "gpt2"), ("flex_attention", "llama")])
def test_kernels_that_cannot_take_the_mask_are_refused(attn, model_type):
    with pytest.raises(UserInputError, match=f"attn_implementation '{attn}' cannot for {model_type}"):
        check_block_kernel(attn, model_type)


def test_kernels_that_take_the_mask_pass():
    for attn, model_type in [("sdpa", "gpt2"), ("eager", "llama"), (None, "gpt2"), ("sdpa", "diffullama")]:
        check_block_kernel(attn, model_type)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8", True])
def test_bad_block_size_is_one_clear_error(bad):
    with pytest.raises(UserInputError, match="block_size must be an integer >= 1"):
        _denoiser("gpt2", block_size=bad)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A block-diffusion LLaMA saved in the hf layout, exported, and exported self-contained."""
    root = tmp_path_factory.mktemp("block")
    tokenizer = tiny_tokenizer()
    model = make_bidirectional(tiny_llama(len(tokenizer), seed=2))
    save_diffusion_checkpoint(model, root / "hf", tokenizer=tokenizer, block_size=BLOCK)
    return {"hf": root / "hf", "native": export_native(root / "hf", root / "native"),
            "remote": export_native(root / "hf", root / "remote", self_contained=True)}


def test_saved_and_exported_models_record_and_apply_the_block_size(saved):
    model, _ = load_diffusion_lm(saved["hf"])
    assert model.block_size == BLOCK and recorded_block_size(model.config) == BLOCK
    assert_block_causal(lambda ids, attention: model(ids, attention))
    native = AutoModel.from_pretrained(saved["native"]).eval()
    assert native.config.block_size == BLOCK and native.diffusion_lm().block_size == BLOCK
    assert_block_causal(lambda ids, attention: native(input_ids=ids, attention_mask=attention).logits, padding=2)
    ids = torch.randint(8, 60, (2, LENGTH), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_tensors_close(native(input_ids=ids).logits, model(ids))
    reloaded, _ = load_diffusion_lm(saved["native"])
    assert reloaded.block_size == BLOCK


def test_self_contained_export_applies_the_block_size_without_the_package(saved):
    """A fresh interpreter that cannot import llamafactory loads the folder with trust_remote_code."""
    script = f"""
import sys, torch
sys.modules["llamafactory"] = None
from transformers import AutoModel
model = AutoModel.from_pretrained({str(saved["remote"])!r}, trust_remote_code=True).eval()
assert model.config.block_size == {BLOCK}
ids = torch.randint(8, 60, (1, {LENGTH}), generator=torch.Generator().manual_seed(3))
changed = ids.clone(); changed[0, {BLOCK + 1}] = 8 if ids[0, {BLOCK + 1}] != 8 else 9
with torch.no_grad():
    a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
assert torch.allclose(a[:, :{BLOCK}], b[:, :{BLOCK}], atol=1e-6, rtol=1e-5)
assert (a[:, {BLOCK}:{2 * BLOCK}] - b[:, {BLOCK}:{2 * BLOCK}]).abs().max() > 1e-4
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=saved["remote"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
