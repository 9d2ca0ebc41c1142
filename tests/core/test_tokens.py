"""Special-token resolution: tokenizer files first, then the published table (docs/design.md#special-tokens), else a clear error."""

import pytest

from llamafactory.ddm import add_mask_token, resolve_special_tokens
from llamafactory.errors import UserInputError
from tests.tiny import tiny_tokenizer


def test_tokenizer_mask_token_wins_over_table():
    tokenizer = tiny_tokenizer()
    tokens = resolve_special_tokens(tokenizer, "llama", 32000)
    assert tokens.mask_id == tokenizer.mask_token_id != 811
    assert tokens.pad_id == tokenizer.pad_token_id and tokens.sep_id == tokenizer.sep_token_id


@pytest.mark.parametrize("model_type,vocab,mask,pad,sep", [
    ("gpt2", 50257, 10541, None, 50155),
    ("gpt2", 50258, 50257, None, None),
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
