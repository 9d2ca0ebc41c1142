"""Model loading for the stages: special tokens, checkpoint_dir, and the full / freeze / LoRA set-ups."""

from __future__ import annotations

import torch

from llamafactory.ddm import framing_tokens, is_bidirectional, load_diffusion_lm
from llamafactory.hparams import get_train_args
from llamafactory.model import diffusion_special_tokens, load_model, setup_finetuning
from tests.tiny import tiny_gpt2, tiny_tokenizer, write_diffugpt_s


def _args(model: str, **overrides):
    config = {"model_name_or_path": model, "stage": "ddm", "do_train": True, "dataset": "wiki_demo",
              "finetuning_type": "full", "output_dir": "unused", **overrides}
    model_args, _, training_args, finetuning_args, _ = get_train_args(config)
    return model_args, finetuning_args, training_args


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_mask_token_is_added_only_when_none_is_known():
    tokenizer = tiny_tokenizer(with_mask=False)
    model = tiny_gpt2(len(tokenizer))
    tokens = diffusion_special_tokens(tokenizer, model)
    assert tokens.mask_id == len(tokenizer) - 1 == model.get_input_embeddings().weight.shape[0] - 1
    assert tokenizer.mask_token_id == tokens.mask_id
    with_mask = tiny_tokenizer()
    assert diffusion_special_tokens(with_mask, tiny_gpt2(len(with_mask))).mask_id == with_mask.mask_token_id
    framing = framing_tokens(with_mask, tokens)
    assert (framing.bos, framing.sep, framing.eos) == (tokens.bos_id, tokens.sep_id, tokens.eos_id)


def test_checkpoint_dir_in_wrapper_layout_loads_over_the_base(tmp_path):
    released = write_diffugpt_s(tmp_path / "diffugpt")
    base = tiny_gpt2(released.config.vocab_size, seed=7)
    base.save_pretrained(tmp_path / "base")
    ids = torch.randint(0, 400, (2, 12))
    model_args, finetuning_args, training_args = _args(str(tmp_path / "base"), checkpoint_dir=str(tmp_path / "diffugpt"))
    loaded = load_model(model_args, finetuning_args, training_args)
    assert is_bidirectional(loaded)
    expected, _ = load_diffusion_lm(tmp_path / "diffugpt")
    assert torch.allclose(_logits(loaded.eval(), ids), _logits(expected.model, ids), atol=1e-5)
    direct = load_model(*_args(str(tmp_path / "diffugpt")))  # a wrapper checkpoint as model_name_or_path
    assert torch.allclose(_logits(direct.eval(), ids), _logits(expected.model, ids), atol=1e-5)


def test_freeze_trains_only_the_chosen_layers(tmp_path):
    tiny_gpt2(400).save_pretrained(tmp_path)
    model_args, finetuning_args, training_args = _args(
        str(tmp_path), finetuning_type="freeze", freeze_trainable_layers=1, freeze_extra_modules="ln_f")
    model = setup_finetuning(load_model(model_args, finetuning_args, training_args), model_args, finetuning_args, True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("transformer.h.1.", "transformer.ln_f.")) for name in trainable)
    assert any(name.startswith("transformer.ln_f.") for name in trainable)


def test_lora_on_tied_gpt2_keeps_the_head_tied_to_the_trained_embedding(tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_gpt2(len(tokenizer)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    model_args, finetuning_args, training_args = _args(
        str(tmp_path / "base"), finetuning_type="lora", lora_target="all", additional_target="wte", lora_rank=4)
    model = setup_finetuning(load_model(model_args, finetuning_args, training_args), model_args, finetuning_args, True)
    inner = model.base_model.model
    embedding = inner.transformer.wte.modules_to_save["default"].weight
    assert inner.lm_head.modules_to_save["default"].weight is embedding
    ids = torch.randint(0, len(tokenizer), (2, 10))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert not torch.equal(embedding, inner.transformer.wte.original_module.weight)
    model.save_pretrained(tmp_path / "adapter")
    reloaded, _ = load_diffusion_lm(tmp_path / "base", adapters=[str(tmp_path / "adapter")])
    assert torch.allclose(_logits(reloaded.model, ids), _logits(model.eval(), ids), atol=1e-5)


def test_adapters_are_merged_for_inference(tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_gpt2(len(tokenizer)).save_pretrained(tmp_path / "base")
    model_args, finetuning_args, training_args = _args(str(tmp_path / "base"), finetuning_type="lora", lora_rank=2)
    trained = setup_finetuning(load_model(model_args, finetuning_args, training_args), model_args, finetuning_args, True)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_()
    trained.save_pretrained(tmp_path / "adapter")
    model_args, finetuning_args, training_args = _args(
        str(tmp_path / "base"), finetuning_type="lora", adapter_name_or_path=str(tmp_path / "adapter"))
    merged = setup_finetuning(load_model(model_args, finetuning_args, training_args), model_args, finetuning_args, False)
    ids = torch.randint(0, len(tokenizer), (1, 8))
    assert not any(p.requires_grad for p in merged.parameters())
    assert "lora" not in " ".join(n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, ids), _logits(trained.eval(), ids), atol=1e-5)
