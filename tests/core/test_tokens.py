"""Special-token resolution: tokenizer files first, then the published table (docs/design.md#special-tokens), else a clear error."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from llamafactory.ddm import add_mask_token, resolve_special_tokens
from llamafactory.errors import UserInputError
from llamafactory.model import diffusion_special_tokens
from tests.tiny import tiny_tokenizer

GPT2_MEDIUM = {"n_embd": 1024, "n_layer": 24, "n_head": 16}
GPT2_SMALL = {"n_embd": 768, "n_layer": 12, "n_head": 12}


def test_tokenizer_mask_token_wins_over_table():
    tokenizer = tiny_tokenizer()
    tokens = resolve_special_tokens(tokenizer, "llama", 32000)
    assert tokens.mask_id == tokenizer.mask_token_id != 811
    assert tokens.pad_id == tokenizer.pad_token_id and tokens.sep_id == tokenizer.sep_token_id


@pytest.mark.parametrize("model_type,vocab,mask,pad,sep", [
    ("gpt2", 50257, 10541, None, 50155),
    ("gpt2", 50258, 50257, 101, 50155),  # diffugpt-m: pad ¨ and sep ====== of GPT-2's vocabulary
    ("llama", 32000, 811, 30399, 4936),
])
def test_released_models_fall_back_to_the_table(model_type, vocab, mask, pad, sep):
    tokenizer = tiny_tokenizer(with_mask=False)
    tokenizer.pad_token = None
    tokenizer.sep_token = None
    tokens = resolve_special_tokens(tokenizer, model_type, vocab)
    assert (tokens.mask_id, tokens.pad_id, tokens.sep_id) == (mask, pad, sep)


def test_added_mask_string_is_found_without_the_special_attribute():
    tokenizer = tiny_tokenizer(with_mask=False)
    tokenizer.add_tokens(["[¨M¨]"])
    assert resolve_special_tokens(tokenizer, "gpt2", len(tokenizer)).mask_id == len(tokenizer) - 1


def test_unknown_model_without_mask_token_fails_and_names_the_fix():
    with pytest.raises(UserInputError, match="no mask token is known") as error:
        resolve_special_tokens(tiny_tokenizer(with_mask=False), "gpt2", 400)
    assert "mask_token" in str(error.value)


def test_mask_id_outside_the_embedding_fails():
    tokenizer = tiny_tokenizer(with_mask=False)
    add_mask_token(tokenizer)
    with pytest.raises(UserInputError, match="outside the model's embedding"):
        resolve_special_tokens(tokenizer, "gpt2", len(tokenizer) - 1)


def test_add_mask_token_grows_vocabulary_once():
    tokenizer = tiny_tokenizer(with_mask=False)
    size = len(tokenizer)
    assert add_mask_token(tokenizer) and tokenizer.mask_token_id == size
    assert not add_mask_token(tokenizer) and len(tokenizer) == size + 1


def gpt2_shaped_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with GPT-2's 50,257 ids where they matter: the 256 byte tokens in GPT-2's order
    (so ``¨`` is id 101), ``======`` at 50155 and ``<|endoftext|>`` at 50256; fillers elsewhere, no merges."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    vocab = {chr(b): i for i, b in enumerate(printable)}
    vocab.update({chr(256 + n): len(printable) + n for n in range(256 - len(printable))})
    vocab.update({f"<|filler{i}|>": i for i in range(256, 50257) if i not in (50155, 50256)})
    vocab.update({"======": 50155, "<|endoftext|>": 50256})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def meta_gpt2(**shape) -> GPT2LMHeadModel:
    """A GPT-2 of the given shape with GPT-2's vocabulary on the meta device: its config and embedding size
    are real, its weights take no memory (the token rule reads only those)."""
    with torch.device("meta"):
        return GPT2LMHeadModel(GPT2Config(vocab_size=50257, **shape))


def test_gpt2_medium_base_gets_the_diffugpt_m_tokens_as_the_original_loader():
    tokenizer, model = gpt2_shaped_tokenizer(), meta_gpt2(**GPT2_MEDIUM)
    tokens = diffusion_special_tokens(tokenizer, model)
    assert (tokens.mask_id, tokens.pad_id, tokens.sep_id, tokens.eos_id) == (50257, 101, 50155, 50256)
    assert (tokenizer.mask_token, tokenizer.pad_token, tokenizer.sep_token) == ("[¨M¨]", "¨", "======")
    assert model.get_input_embeddings().weight.shape[0] == 50258 == len(tokenizer)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # still tied
    again = diffusion_special_tokens(tokenizer, model)  # the saved tokenizer resolves to the same ids
    assert again == tokens and len(tokenizer) == 50258


@pytest.mark.parametrize("shape", [GPT2_SMALL, {"n_embd": 1024, "n_layer": 12, "n_head": 16}])
def test_other_gpt2_shapes_keep_the_diffugpt_s_tokens(shape):
    tokenizer, model = gpt2_shaped_tokenizer(), meta_gpt2(**shape)
    tokens = diffusion_special_tokens(tokenizer, model)
    assert (tokens.mask_id, tokens.pad_id, tokens.sep_id) == (10541, None, 50155)
    assert model.get_input_embeddings().weight.shape[0] == 50257 == len(tokenizer)


def test_released_diffugpt_m_rows_resolve_without_the_config():
    tokenizer = gpt2_shaped_tokenizer()  # e.g. the base gpt2-medium tokenizer next to released weights
    assert resolve_special_tokens(tokenizer, "gpt2", 50258).mask_id == 50257
    medium = GPT2Config(vocab_size=50258, **GPT2_MEDIUM)
    assert resolve_special_tokens(tokenizer, "gpt2", 50258, config=medium).pad_id == 101
    with pytest.raises(UserInputError, match="no mask token is known"):  # 50258 rows but not the medium shape
        resolve_special_tokens(tokenizer, "gpt2", 50258, config=GPT2Config(vocab_size=50258, **GPT2_SMALL))


def test_new_embedding_rows_start_at_the_mean_of_the_old_ones():
    from llamafactory.model.tokenizer import grow_embeddings
    from tests.tiny import tiny_gpt2

    torch.manual_seed(0)
    model = tiny_gpt2(300, n_embd=64)
    old = model.get_input_embeddings().weight[:300].detach().clone()
    grow_embeddings(model, 700)
    new = model.get_input_embeddings().weight[300:].detach()
    assert torch.equal(model.get_input_embeddings().weight[:300], old)
    assert (new.mean(dim=0) - old.mean(dim=0)).abs().max() < 4 / 64 ** 0.5 / 400 ** 0.5  # 4 standard errors
    assert new.std().item() == pytest.approx(1 / 64 ** 0.5, rel=0.1)


def test_an_exported_config_supplies_the_ids_its_tokenizer_lacks():
    from llamafactory.ddm.hf import DiffuLLaMAConfig

    tokenizer = tiny_tokenizer(with_mask=False)
    tokenizer.pad_token = tokenizer.sep_token = None
    config = DiffuLLaMAConfig(vocab_size=len(tokenizer), mask_token_id=7, pad_token_id=8, sep_token_id=9)
    tokens = resolve_special_tokens(tokenizer, config.model_type, len(tokenizer), config=config, recorded_mask_id=7)
    assert (tokens.mask_id, tokens.pad_id, tokens.sep_id) == (7, 8, 9)
    plain = GPT2Config(vocab_size=len(tokenizer), pad_token_id=8)  # an AR config's pad id is not a diffusion record
    assert resolve_special_tokens(tokenizer, "gpt2", len(tokenizer), config=plain, recorded_mask_id=7).pad_id is None
