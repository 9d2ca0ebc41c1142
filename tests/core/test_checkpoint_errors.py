"""Damaged checkpoints and tokenizers are one clear error, not a traceback or garbage; the window check; the
mask id a checkpoint's config records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llamafactory.ddm import (
    check_window,
    load_causal_lm,
    load_diffusion_lm,
    load_tokenizer,
    load_weights_into,
    record_mask_id,
    recorded_mask_id,
    resolve_special_tokens,
    tokenizer_problem,
)
from llamafactory.errors import UserInputError
from llamafactory.quickstart import DIFFUGPT
from llamafactory.quickstart import main as quickstart
from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer, write_diffugpt_s, write_diffullama


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("writer", [write_diffugpt_s, write_diffullama], ids=["wrapper", "hf"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_weight_file_names_itself(tmp_path, writer, damage):
    writer(tmp_path / "ckpt")
    victim = sorted((tmp_path / "ckpt").glob("*.safetensors"))[0]
    _truncate(victim) if damage == "truncated" else victim.write_bytes(b"\x00" * 64)
    for load in (lambda: load_causal_lm(tmp_path / "ckpt"), lambda: load_diffusion_lm(tmp_path / "ckpt"),
                 lambda: load_weights_into(tiny_llama(400) if writer is write_diffullama else tiny_gpt2(400),
                                           tmp_path / "ckpt")):
        with pytest.raises(UserInputError, match=f"{victim} is not a readable safetensors file .*truncated or corrupt"):
            load()


def test_a_missing_shard_and_an_unreadable_index_are_errors(tmp_path):
    write_diffullama(tmp_path / "ckpt")
    index = tmp_path / "ckpt" / "model.safetensors.index.json"
    shard = sorted((tmp_path / "ckpt").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(UserInputError, match=f"weight file {shard.name} named by the index is missing"):
        load_causal_lm(tmp_path / "ckpt")
    index.write_text("{")
    with pytest.raises(UserInputError, match="the weight index cannot be read"):
        load_causal_lm(tmp_path / "ckpt")


def test_a_config_whose_vocabulary_disagrees_with_the_weights(tmp_path):
    write_diffullama(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["vocab_size"] = 512
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="config.json says vocab_size 512 but the weights' embedding has 400 rows"):
        load_causal_lm(tmp_path / "ckpt")


def test_tokenizers_that_cannot_encode_text_are_detected():
    class EverythingUnknown:
        def __len__(self) -> int:
            return 100

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [0] * len(text.split())}

    assert tokenizer_problem(tiny_tokenizer()) is None
    assert "encodes a test sentence as [0, 0, 0" in tokenizer_problem(EverythingUnknown())


def test_a_model_folder_without_tokenizer_files_says_the_tokenizer_is_missing(tmp_path, capsys):
    """transformers 5 builds an empty GPT-2 tokenizer there; it used to surface as 'no mask token'."""
    model = tiny_gpt2(400)
    write_diffugpt_s(tmp_path / "released")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (tmp_path / "released" / name).unlink(missing_ok=True)
    model.save_pretrained(tmp_path / "bare")
    with pytest.raises(UserInputError, match="no usable tokenizer: the tokenizer of .*bare cannot encode text "
                                             "\\(its vocabulary has 1 token\\(s\\): are its tokenizer files missing"):
        load_tokenizer(tmp_path / "bare")
    assert quickstart(DIFFUGPT, ["--model_name", str(tmp_path / "released"), "--base_model_name", str(tmp_path / "bare"),
                                 "--diffusion_steps", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: no usable tokenizer") and "mask" not in error
    assert "text in and out needs one" in error


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    write_diffullama(tmp_path / "ckpt")
    larger = tiny_tokenizer(500)
    assert len(larger) > 400
    with pytest.raises(UserInputError, match=f"the tokenizer has {len(larger)} ids but the model .* has 400 embedding rows"):
        load_diffusion_lm(tmp_path / "ckpt", tokenizer=larger)


def test_the_window_check_and_the_quickstart_gen_len(tmp_path, capsys):
    config = tiny_gpt2(400, n_positions=64).config
    check_window(config, 64, "--gen_len 64")
    with pytest.raises(UserInputError, match="--gen_len 65 needs 65 positions, more than the 64 the model covers"):
        check_window(config, 65, "--gen_len 65")
    write_diffugpt_s(tmp_path / "ckpt")
    assert quickstart(DIFFUGPT, ["--model_name", str(tmp_path / "ckpt"), "--gen_len", "1000"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --gen_len 1000 needs 1000 positions, more than the 64 the model covers (gpt2 max_position_embeddings "
        "/ n_positions)")


def test_a_recorded_mask_id_comes_before_the_tokenizer_and_the_table(tmp_path):
    model = tiny_llama(32000, hidden_size=16, intermediate_size=32)  # the DiffuLLaMA vocabulary: table says 811
    assert recorded_mask_id(model.config) is None
    assert resolve_special_tokens(None, "llama", 32000).mask_id == 811
    record_mask_id(model.config, 255)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_causal_lm(tmp_path / "ckpt")
    assert recorded_mask_id(loaded.config) == 255
    tokens = resolve_special_tokens(tiny_tokenizer(), "llama", 32000, recorded_mask_id=recorded_mask_id(loaded.config))
    assert tokens.mask_id == 255
    assert torch.isfinite(loaded(torch.tensor([[1, 255]])).logits).all()
