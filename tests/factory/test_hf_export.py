"""A LoRA-trained ddm-sft output exports to the Hugging Face-native format with the adapter merged and the
head tied to the (trained) embedding, and trains on again from the export."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from transformers import AutoModelForMaskedLM

from llamafactory.cli import main as cli
from llamafactory.ddm import load_diffusion_lm
from llamafactory.train import run_exp

from .conftest import tiny_config

LORA = dict(finetuning_type="lora", lora_target="all", additional_target="wte", lora_rank=4, max_steps=4,
            do_predict=False, save_steps=100, learning_rate=5e-3)


def test_lora_ddm_sft_output_exports_merged_with_a_tied_head(tiny_models, datasets_cache, tmp_path):
    output = tmp_path / "lora"
    run_exp(tiny_config("gpt2_ddm-sft.yaml", tiny_models, output, datasets_cache, checkpoint_dir=None, **LORA))
    assert "wte" in json.loads((output / "adapter_config.json").read_text())["modules_to_save"]
    export = tmp_path / "export"
    assert cli(["export", "--model_name_or_path", str(tiny_models / "gpt2"), "--adapter_name_or_path", str(output),
                "--export_dir", str(export)]) == 0
    with safe_open(str(export / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert not any("lora" in key or "modules_to_save" in key for key in keys) and "lm_head.weight" not in keys
    model = AutoModelForMaskedLM.from_pretrained(export).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    merged, _ = load_diffusion_lm(tiny_models / "gpt2", adapters=[str(output)])
    base, _ = load_diffusion_lm(tiny_models / "gpt2")
    torch.testing.assert_close(model.transformer.wte.weight, merged.model.get_input_embeddings().weight)
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, merged(ids), rtol=0, atol=1e-5)
        assert (model(input_ids=ids).logits - base(ids)).abs().max() > 1e-4  # the adapter is in the weights
    again = tmp_path / "again"
    run_exp(tiny_config("gpt2_ddm-sft.yaml", tiny_models, again, datasets_cache, checkpoint_dir=None,
                        model_name_or_path=str(export), max_steps=2, do_predict=False, save_steps=100))
    reloaded, _ = load_diffusion_lm(again)
    assert type(reloaded.causal_lm()).__name__ == "DiffuGPTForMaskedLM" and reloaded.mask_id == model.config.mask_token_id
