"""The three released layouts load, match a plain transformers forward, and save back the same way."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llamafactory.ddm import (
    detect_layout,
    load_causal_lm,
    load_diffusion_lm,
    load_weights_into,
    save_diffusion_checkpoint,
)
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, write_diffugpt_m, write_diffugpt_s, write_diffullama

WRITERS = {"diffugpt-s": write_diffugpt_s, "diffugpt-m": write_diffugpt_m, "diffullama": write_diffullama}


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("released")
    return {name: (root / name, write(root / name)) for name, write in WRITERS.items()}


def _all_attend(length: int) -> torch.Tensor:
    return torch.zeros(1, 1, length, length)


def test_layouts_are_the_released_ones(released):
    s_keys = load_file(released["diffugpt-s"][0] / "model.safetensors").keys()
    assert "embed_tokens.weight" in s_keys and "lm_head.weight" not in s_keys
    assert all(k == "embed_tokens.weight" or k.startswith("denoise_model.") for k in s_keys)
    m_dir, m_model = released["diffugpt-m"]
    assert load_file(m_dir / "model.safetensors")["embed_tokens.weight"].shape[0] == 402
    assert (released["diffullama"][0] / "model.safetensors.index.json").exists()
    assert detect_layout(released["diffugpt-s"][0]) == "wrapper"
    assert detect_layout(released["diffullama"][0]) == "hf"


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_logits_equal_plain_transformers_forward_with_all_attend_mask(released, name, attention):
    directory, reference = released[name]
    model, tokenizer = load_diffusion_lm(directory, attn_implementation=attention)
    ids = torch.randint(6, len(tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    reference.config._attn_implementation = attention
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=_all_attend(12)).logits
        got = model(ids)
    assert got.shape == (2, 12, reference.config.vocab_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(WRITERS))
def test_eager_equals_sdpa_and_position_zero_sees_the_last_token(released, name):
    directory, _ = released[name]
    eager, tokenizer = load_diffusion_lm(directory, attn_implementation="eager")
    sdpa, _ = load_diffusion_lm(directory, attn_implementation="sdpa")
    ids = torch.randint(6, len(tokenizer), (1, 10), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, -1] = 6 if ids[0, -1] != 6 else 7
    with torch.no_grad():
        torch.testing.assert_close(eager(ids), sdpa(ids), atol=1e-5, rtol=0)
        assert (sdpa(ids)[0, 0] - sdpa(changed)[0, 0]).abs().max() > 1e-4


def test_special_tokens_come_from_the_checkpoint(released):
    model, tokenizer = load_diffusion_lm(released["diffugpt-m"][0])
    assert model.mask_id == tokenizer.mask_token_id == 400
    model, tokenizer = load_diffusion_lm(released["diffullama"][0])
    assert model.mask_id == tokenizer.convert_tokens_to_ids("<mask>")
    assert model.tokens.pad_id == tokenizer.pad_token_id


def test_wrapper_checkpoint_with_missing_or_unexpected_keys_names_them(released, tmp_path):
    source = released["diffugpt-s"][0]
    state = load_file(source / "model.safetensors")
    state.pop("denoise_model.h.1.mlp.c_fc.weight")
    state["denoise_model.h.9.extra.weight"] = torch.zeros(2)
    broken = tmp_path / "broken"
    broken.mkdir()
    save_file(state, broken / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((source / name).read_bytes())
    with pytest.raises(UserInputError) as error:
        load_diffusion_lm(broken)
    assert "transformer.h.1.mlp.c_fc.weight" in str(error.value)
    assert "transformer.h.9.extra.weight" in str(error.value)


def test_sharded_checkpoint_with_missing_key_names_it(released, tmp_path):
    source = released["diffullama"][0]
    broken = tmp_path / "llama"
    broken.mkdir()
    index = json.loads((source / "model.safetensors.index.json").read_text())
    victim = "model.layers.0.mlp.up_proj.weight"
    for shard in sorted(set(index["weight_map"].values())):
        state = load_file(source / shard)
        state.pop(victim, None)
        save_file(state, broken / shard, metadata={"format": "pt"})
    index["weight_map"].pop(victim)
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    (broken / "config.json").write_bytes((source / "config.json").read_bytes())
    with pytest.raises(UserInputError, match=victim):
        load_causal_lm(broken)


def test_unknown_path_and_unreachable_hub_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserInputError, match="does not exist"):
        load_diffusion_lm(tmp_path / "nope")
    with pytest.raises(UserInputError, match="neither a local directory nor a reachable Hub model"):
        load_diffusion_lm("no-such-org/no-such-model")


@pytest.mark.parametrize("name,layout", [("diffugpt-s", "wrapper"), ("diffugpt-m", "wrapper"), ("diffullama", "hf"),
                                         ("diffugpt-s", "hf")])
def test_save_round_trip_keeps_logits(released, tmp_path, name, layout):
    model, tokenizer = load_diffusion_lm(released[name][0])
    target = save_diffusion_checkpoint(model.model, tmp_path / "saved", layout=layout, tokenizer=tokenizer,
                                       generation_length=16)
    again, _ = load_diffusion_lm(target)
    ids = torch.randint(6, len(tokenizer), (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), again(ids), atol=0, rtol=0)
    assert json.loads((target / "config.json").read_text())["is_causal"] is False
    assert again.config.task_specific_params["text-generation"]["max_length"] == 16
    if layout == "wrapper":
        assert "lm_head.weight" not in load_file(target / "model.safetensors")


def test_saved_checkpoint_is_readable_by_the_group_as_a_plain_write_would_be(released, tmp_path):
    """Staging in a temporary folder must not leave the checkpoint owner-only (0700 / 0600) on shared clusters."""
    model, tokenizer = load_diffusion_lm(released["diffugpt-s"][0])
    previous = os.umask(0o022)
    try:
        target = save_diffusion_checkpoint(model.model, tmp_path / "shared", layout="wrapper", tokenizer=tokenizer)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in target.iterdir()} == {0o644}


def test_failed_save_leaves_the_previous_checkpoint_intact(released, tmp_path, monkeypatch):
    model, tokenizer = load_diffusion_lm(released["diffugpt-s"][0])
    target = save_diffusion_checkpoint(model.model, tmp_path / "ckpt", layout="wrapper", tokenizer=tokenizer)
    before = (target / "model.safetensors").read_bytes()

    class Boom(RuntimeError):
        pass

    def explode(*args, **kwargs):
        raise Boom("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", explode)
    with pytest.raises(Boom):
        save_diffusion_checkpoint(model.model, target, layout="wrapper", tokenizer=tokenizer)
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_wrapper_layout_refuses_untied_models(released, tmp_path):
    model, _ = load_diffusion_lm(released["diffullama"][0])
    with pytest.raises(UserInputError, match="tied"):
        save_diffusion_checkpoint(model.model, tmp_path / "x", layout="wrapper")


def test_load_weights_into_a_base_model_from_either_layout(released):
    for name in ("diffugpt-s", "diffugpt-m"):
        directory, reference = released[name]
        base = tiny_gpt2(400, seed=99)
        load_weights_into(base, directory)
        assert torch.equal(base.transformer.wte.weight, reference.transformer.wte.weight)
        assert base.lm_head.weight.data_ptr() == base.transformer.wte.weight.data_ptr()


def test_lora_adapter_with_trained_embedding_merges_and_keeps_head_tied(released, tmp_path):
    from peft import LoraConfig, get_peft_model

    directory = released["diffugpt-s"][0]
    base, _ = load_diffusion_lm(directory)
    peft_model = get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear", modules_to_save=["wte"]))
    trained = peft_model.base_model.model.transformer.wte.modules_to_save["default"].weight
    with torch.no_grad():
        trained.add_(0.5)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.01)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged, _ = load_diffusion_lm(directory, adapters=[str(tmp_path / "adapter")])
    plain, _ = load_diffusion_lm(directory)
    head = merged.model.get_output_embeddings().weight
    assert head is merged.model.get_input_embeddings().weight
    torch.testing.assert_close(head, trained.detach())
    ids = torch.randint(6, 400, (1, 8))
    with torch.no_grad():
        assert (merged(ids) - plain(ids)).abs().max() > 1e-3
    with pytest.raises(UserInputError, match="not a PEFT adapter"):
        load_diffusion_lm(directory, adapters=[str(directory)])


@pytest.mark.parametrize("layout", ["hf", "wrapper"])
def test_save_takes_an_explicit_state_dict(released, tmp_path, layout):
    model, tokenizer = load_diffusion_lm(released["diffugpt-s"][0])
    state = {k: v.clone() for k, v in model.model.state_dict().items()}
    expected = torch.full_like(state["transformer.ln_f.bias"], 0.25)
    state["transformer.ln_f.bias"] = expected.clone()
    target = save_diffusion_checkpoint(model.model, tmp_path / layout, layout=layout, state_dict=state,
                                       tokenizer=tokenizer)
    again, _ = load_diffusion_lm(target)
    assert torch.equal(again.model.transformer.ln_f.bias, expected)


# Adapters written by hand: the tensors of one LoRA adapter (rank 4 on two projections, plus a trained copy of
# the embedding) saved twice, under the original wrapper's names and under transformers' names.
LORA_RANK, LORA_ALPHA = 4, 8
ADAPTER_LAYOUTS = {
    # released layout -> (targets, embedding in transformers names, body prefix in transformers names)
    "diffullama": (("self_attn.q_proj", "self_attn.v_proj"), "model.embed_tokens", "model."),
    "diffugpt-s": (("attn.c_attn", "mlp.c_fc"), "transformer.wte", "transformer."),
}


def _lora_tensors(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Random LoRA A / B factors for each targeted module and a perturbed embedding, in transformers' names."""
    targets, embedding, _ = ADAPTER_LAYOUTS[name]
    generator = torch.Generator().manual_seed(5)
    tensors = {}
    for module_name, module in model.named_modules():
        if module_name.endswith(targets):
            weight = module.weight  # Linear [out, in]; GPT-2's Conv1D stores [in, out]
            fan_in, fan_out = (weight.shape[0], weight.shape[1]) if name == "diffugpt-s" else weight.shape[::-1]
            tensors[f"{module_name}.lora_A.weight"] = torch.randn(LORA_RANK, fan_in, generator=generator) * 0.1
            tensors[f"{module_name}.lora_B.weight"] = torch.randn(fan_out, LORA_RANK, generator=generator) * 0.1
    rows = model.get_input_embeddings().weight
    tensors[f"{embedding}.weight"] = rows.detach() + 0.05 * torch.randn(rows.shape, generator=generator)
    return tensors


def _write_adapter(directory: Path, tensors: dict[str, torch.Tensor], name: str, embedding_module: str) -> Path:
    targets = [t.split(".")[-1] for t in ADAPTER_LAYOUTS[name][0]]
    directory.mkdir(parents=True)
    save_file({f"base_model.model.{k}": v.contiguous() for k, v in tensors.items()},
              directory / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": LORA_RANK, "lora_alpha": LORA_ALPHA,
              "lora_dropout": 0.0, "bias": "none", "target_modules": targets, "modules_to_save": [embedding_module],
              "fan_in_fan_out": name == "diffugpt-s", "base_model_name_or_path": None, "inference_mode": True}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def _both_layouts(released, tmp_path, name) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """The same adapter in transformers' layout and in the original wrapper's layout."""
    _, embedding, body = ADAPTER_LAYOUTS[name]
    model, _ = load_diffusion_lm(released[name][0])
    tensors = _lora_tensors(model.model, name)
    hf = _write_adapter(tmp_path / "hf", tensors, name, embedding.split(".")[-1])
    wrapped = {}
    for key, value in tensors.items():
        if key.startswith(embedding + "."):
            wrapped["embed_tokens." + key[len(embedding) + 1 :]] = value
        else:
            wrapped["denoise_model." + key[len(body) :]] = value
    wrapper = _write_adapter(tmp_path / "wrapper", wrapped, name, "embed_tokens")
    return hf, wrapper, tensors


@pytest.mark.parametrize("name", ["diffullama", "diffugpt-s"])
def test_adapter_in_the_original_wrapper_layout_equals_the_same_adapter_in_hf_layout(released, tmp_path, name):
    directory = released[name][0]
    hf, wrapper, tensors = _both_layouts(released, tmp_path, name)
    assert any(k.startswith("base_model.model.denoise_model.") for k in load_file(wrapper / "adapter_model.safetensors"))
    plain, _ = load_diffusion_lm(directory)
    from_hf, _ = load_diffusion_lm(directory, adapters=[str(hf)])
    from_wrapper, _ = load_diffusion_lm(directory, adapters=[str(wrapper)])
    ids = torch.randint(6, 400, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, logits = from_hf(ids), from_wrapper(ids)
        assert (reference - plain(ids)).abs().max() > 1e-2  # the adapter changes the model
    torch.testing.assert_close(logits, reference)
    _, embedding, _ = ADAPTER_LAYOUTS[name]
    torch.testing.assert_close(from_wrapper.model.get_input_embeddings().weight, tensors[f"{embedding}.weight"])
    if name == "diffullama":  # merged weight = W + (alpha / r) B A, from the file's factors
        prefix = "model.layers.0.self_attn.q_proj"
        delta = tensors[f"{prefix}.lora_B.weight"] @ tensors[f"{prefix}.lora_A.weight"] * LORA_ALPHA / LORA_RANK
        torch.testing.assert_close(from_wrapper.model.model.layers[0].self_attn.q_proj.weight,
                                   plain.model.model.layers[0].self_attn.q_proj.weight + delta)


def test_wrapper_layout_adapter_loads_for_training_and_as_checkpoint_dir(released, tmp_path):
    from llamafactory.ddm import load_adapter
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model

    directory = released["diffullama"][0]
    hf, wrapper, tensors = _both_layouts(released, tmp_path, "diffullama")
    trainable = load_adapter(load_causal_lm(directory), wrapper, is_trainable=True)
    lora_a = dict(trainable.named_parameters())["base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight"]
    assert lora_a.requires_grad and torch.equal(lora_a.detach(), tensors["model.layers.1.self_attn.v_proj.lora_A.weight"])
    config = {"model_name_or_path": str(directory), "checkpoint_dir": str(wrapper), "stage": "ddm-sft", "shift": True,
              "do_train": True, "dataset": "gsm_demo", "finetuning_type": "full", "output_dir": "unused"}
    model_args, _, training_args, finetuning_args, _ = get_train_args(config)
    merged = load_model(model_args, finetuning_args, training_args).eval()
    expected, _ = load_diffusion_lm(directory, adapters=[str(hf)])
    ids = torch.randint(6, 400, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected(ids))


def test_adapter_matching_neither_layout_names_its_first_keys(released, tmp_path):
    directory = released["diffullama"][0]
    _, wrapper, tensors = _both_layouts(released, tmp_path, "diffullama")
    stray = {("encoder.blocks." + k.split("layers.", 1)[1]) if "layers." in k else k: v for k, v in tensors.items()}
    bad = _write_adapter(tmp_path / "bad", stray, "diffullama", "embed_tokens")
    with pytest.raises(UserInputError) as error:
        load_diffusion_lm(directory, adapters=[str(bad)])
    message = str(error.value)
    assert message.startswith(f"adapter {bad} does not fit this LlamaForCausalLM: its keys match neither")
    assert "first unmatched: base_model.model.encoder.blocks.0.self_attn." in message and "\n" not in message
