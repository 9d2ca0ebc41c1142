"""The block-diffusion objective (docs/design.md#block-diffusion): the one ``[x_t ; x_0]`` forward gives, for
every block, the ELBO term of its noised tokens given the clean blocks before it, exactly as one forward per
block of ``[clean blocks < k ; noisy block k]`` would; padding changes nothing; one block is the
full-sequence loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llamafactory.ddm import corrupt, make_bidirectional, sample_noise_level, training_loss
from llamafactory.ddm.noise import block_diffusion_loss, diffusion_loss, noisy_clean_inputs
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, tiny_llama
from tests.tolerance import close

MASK, VOCAB, LENGTH, BLOCK = 7, 60, 13, 4
BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def _model(name: str) -> torch.nn.Module:
    return make_bidirectional(BUILDERS[name](VOCAB, seed=3))


def _ids(rows: int = 3) -> torch.Tensor:
    return torch.randint(8, VOCAB, (rows, LENGTH), generator=torch.Generator().manual_seed(5))


def _padding(kind: str) -> torch.Tensor | None:
    """A 2D padding mask for 3 rows: none, left padding or right padding of different widths."""
    if kind == "none":
        return None
    mask = torch.ones(3, LENGTH, dtype=torch.long)
    for row, width in enumerate((3, 0, 6)):
        if width:
            mask[row, :width] = 0 if kind == "left" else 1
            if kind == "right":
                mask[row, LENGTH - width :] = 0
    return mask


def _block_causal(length: int, block: int) -> torch.Tensor:
    """By definition: query q sees key k when k's block is not after q's; ``[1, 1, L, L]`` additive."""
    mask = torch.zeros(length, length)
    for q in range(length):
        for k in range(length):
            if k // block > q // block:
                mask[q, k] = torch.finfo(torch.float32).min
    return mask[None, None]


def reference_loss(model, ids, noisy, masked, t, block, shift, attention_mask):
    """One forward per (row, block) on the row's real tokens only: clean blocks before ``k``, then noisy
    block ``k``, block-causal; each masked token of block ``k`` scored from that forward as in the AR model."""
    terms, plain, count = [], [], 0
    for row in range(ids.shape[0]):
        real = torch.ones(ids.shape[1], dtype=torch.bool) if attention_mask is None else attention_mask[row].bool()
        clean, noise, hit = ids[row][real], noisy[row][real], masked[row][real]
        for start in range(0, len(clean), block):
            end = min(start + block, len(clean))
            if not hit[start:end].any():
                continue
            sequence = torch.cat([clean[:start], noise[start:end]])[None]
            logits = model(input_ids=sequence, attention_mask=_block_causal(end, block),
                           position_ids=torch.arange(end)[None]).logits[0]
            for j in (start + torch.nonzero(hit[start:end]).flatten()).tolist():
                ce = F.cross_entropy(logits[j - 1 if shift else j], clean[j]).item()
                terms.append(ce / t[row].item())
                plain.append(ce)
                count += 1
    return sum(terms) / count, sum(plain) / count


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("shift", [True, False], ids=["shift", "no-shift"])
@pytest.mark.parametrize("padding", ["none", "left", "right"])
def test_one_forward_equals_one_forward_per_block(name, shift, padding):
    model, ids, attention_mask = _model(name), _ids(), _padding(padding)
    seed = 11
    generator = torch.Generator().manual_seed(seed)
    t = sample_noise_level(ids.shape[0], generator=generator)
    noisy, masked = corrupt(ids, t, MASK, shift=shift, generator=generator, attention_mask=attention_mask)
    assert masked.any()
    expected, expected_plain = reference_loss(model, ids, noisy, masked, t, BLOCK, shift, attention_mask)
    with torch.no_grad():
        result = training_loss(model, ids, MASK, shift=shift, block_size=BLOCK, attention_mask=attention_mask,
                               generator=torch.Generator().manual_seed(seed))
    assert result.num_masked.item() == int(masked.sum())
    assert result.loss.item() == close(expected)
    assert result.unweighted_loss.item() == close(expected_plain)


def test_prompt_stays_clean_and_unscored_and_pad_tokens_are_targets():
    """ddm-sft rows: ``src_mask`` on the prompt, right padding attended and scored (no attention mask)."""
    model, ids = _model("llama"), _ids()
    ids[:, -4:] = 2  # pad tokens: part of the target
    src = torch.zeros_like(ids, dtype=torch.bool)
    src[:, :6] = True
    generator = torch.Generator().manual_seed(2)
    t = sample_noise_level(3, generator=generator)
    noisy, masked = corrupt(ids, t, MASK, src_mask=src, generator=generator)
    assert not masked[src].any() and masked[:, -4:].any()
    expected, _ = reference_loss(model, ids, noisy, masked, t, BLOCK, True, None)
    with torch.no_grad():
        result = training_loss(model, ids, MASK, src_mask=src, block_size=BLOCK, generator=torch.Generator().manual_seed(2))
    assert result.loss.item() == close(expected)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_one_block_is_the_full_sequence_loss(name):
    model, ids = _model(name), _ids()
    with torch.no_grad():
        full = training_loss(model, ids, MASK, anneal=0.4, generator=torch.Generator().manual_seed(4))
        for block in (LENGTH, 100):
            same = training_loss(model, ids, MASK, anneal=0.4, block_size=block, generator=torch.Generator().manual_seed(4))
            assert torch.equal(same.loss, full.loss)
        # the [x_t ; x_0] forward itself, with the clean half unseen, gives the same loss
        generator = torch.Generator().manual_seed(4)
        t = sample_noise_level(3, generator=generator)
        noisy, masked = corrupt(ids, t, MASK, generator=generator)
        logits = model(**noisy_clean_inputs(noisy, ids, LENGTH)).logits
        doubled = block_diffusion_loss(logits, ids, masked, t, block_size=LENGTH)
        plain = diffusion_loss(model(input_ids=noisy).logits, ids, masked, t)
    assert doubled.loss.item() == close(plain.loss.item())


def test_padding_hidden_without_blocks_equals_the_unpadded_rows():
    model, ids = _model("gpt2"), _ids()
    attention_mask = _padding("left")
    generator = torch.Generator().manual_seed(9)
    t = sample_noise_level(3, generator=generator)
    noisy, masked = corrupt(ids, t, MASK, generator=generator, attention_mask=attention_mask)
    expected, _ = reference_loss(model, ids, noisy, masked, t, LENGTH, True, attention_mask)
    with torch.no_grad():
        result = training_loss(model, ids, MASK, attention_mask=attention_mask, generator=torch.Generator().manual_seed(9))
    assert result.loss.item() == close(expected)


def test_block_loss_trains_through_both_halves():
    model, ids = _model("llama"), _ids()
    result = training_loss(model, ids, MASK, block_size=BLOCK, anneal=0.5, generator=torch.Generator().manual_seed(1))
    result.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_nothing_masked_is_a_zero_that_backpropagates():
    model, ids = _model("gpt2"), _ids()
    result = training_loss(model, ids, MASK, block_size=BLOCK, eps=1e-9,
                           src_mask=torch.ones_like(ids, dtype=torch.bool))
    assert result.loss.item() == 0.0 and result.num_masked.item() == 0
    result.loss.backward()


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True])
def test_bad_block_size_is_one_clear_error(bad):
    with pytest.raises(UserInputError, match="block_size must be an integer >= 1"):
        training_loss(_model("gpt2"), _ids(), MASK, block_size=bad)
