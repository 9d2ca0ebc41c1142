"""Root faces: model.py's original API, attention_patch, and the inf_* scripts as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import attention_patch
from llamafactory.quickstart import DIFFUGPT, DIFFULLAMA, build_parser, main
from model import DiscreteDiffusionModel, generate_samples
from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer, write_diffugpt_m, write_diffugpt_s, write_diffullama

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    write_diffugpt_s(root / "s")
    write_diffugpt_m(root / "m")
    write_diffullama(root / "l")
    return root


def _args(**overrides):
    values = dict(diffusion_steps=8, logits_temp=0.95, topp_temp=0.9, shift=True, seed=0)
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.mark.parametrize("name", ["s", "m", "l"])
def test_original_from_pretrained_and_generate_samples(checkpoints, name):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(checkpoints / name)
    tokenizer = AutoTokenizer.from_pretrained(checkpoints / name)
    model = DiscreteDiffusionModel.from_pretrained(str(checkpoints / name), model=str(checkpoints / name),
                                                   config=config, tokenizer=tokenizer, device="cpu")
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.encode("the cat") + [0] * 8])
    src = torch.zeros_like(ids)
    src[:, :3] = 1
    logits = model(ids, attention_mask=None)
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    out = generate_samples(model, _args(), tokenizer, {"input_ids": ids, "src_mask": src}, verbose=True)
    # As the original: position 0 (never predicted under shift) is dropped, so the result has length L - 1.
    assert out.shape == (1, ids.shape[1] - 1)
    assert torch.equal(out[:, :2], ids[:, 1:3]) and not (out == model.mask_id).any()
    again = generate_samples(model, _args(), tokenizer, {"input_ids": ids, "src_mask": src})
    assert torch.equal(out, again)


def test_original_constructor_from_a_llama_instance(checkpoints):
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(checkpoints / "l")
    tokenizer = AutoTokenizer.from_pretrained(checkpoints / "l")
    llama = LlamaForCausalLM.from_pretrained(checkpoints / "l")
    model = DiscreteDiffusionModel(model=llama, config=config, tokenizer=tokenizer, device="cpu")
    assert model.config.is_causal is False and model.mask_id == tokenizer.mask_token_id
    out = generate_samples(model, _args(diffusion_steps=4, logits_temp=0.9), tokenizer,
                           {"input_ids": torch.full((2, 12), model.mask_id)})
    assert out.shape == (2, 11) and not (out == model.mask_id).any()
    unshifted = generate_samples(model, _args(diffusion_steps=4, shift=False), tokenizer,
                                 {"input_ids": torch.full((2, 12), model.mask_id)})
    assert unshifted.shape == (2, 12)


def test_attention_patch_changes_nothing_global():
    from transformers.models.gpt2 import modeling_gpt2
    from transformers.models.llama import modeling_llama

    before = (dict(vars(modeling_gpt2)), dict(vars(modeling_llama)), dict(vars(transformers.masking_utils)))
    attention_patch.replace_attention_mask()
    after = (dict(vars(modeling_gpt2)), dict(vars(modeling_llama)), dict(vars(transformers.masking_utils)))
    assert all(b.keys() == a.keys() and all(b[k] is a[k] for k in b) for b, a in zip(before, after))


def test_attention_patch_makes_the_models_it_is_given_attend_both_ways():
    """replace_attention_mask(model): a later token changes an earlier position's logits; other models stay causal."""
    torch.manual_seed(0)
    patched, untouched = tiny_llama(40).eval(), tiny_gpt2(40).eval()
    gpt2 = tiny_gpt2(40).eval()
    attention_patch.replace_attention_mask(patched, gpt2)
    ids = torch.randint(5, 40, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 40
    with torch.no_grad():
        for model, sees_the_future in ((patched, True), (gpt2, True), (untouched, False)):
            first = model(input_ids=ids).logits[0, 0], model(input_ids=changed).logits[0, 0]
            assert (not torch.allclose(*first)) is sees_the_future, type(model).__name__
    assert patched.config.is_causal is False and getattr(untouched.config, "is_causal", True) is not False


@pytest.mark.parametrize("text,value", [("False", False), ("false", False), ("0", False), ("true", True)])
def test_booleans_really_parse(text, value):
    args = build_parser(DIFFUGPT).parse_args(["--shift", text, "--verbose", text])
    assert args.shift is value and args.verbose is value
    assert build_parser(DIFFUGPT).parse_args(["--verbose"]).verbose is True
    assert build_parser(DIFFUGPT).parse_args([]).shift is True


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.mark.parametrize("family,name", [(DIFFUGPT, "s"), (DIFFUGPT, "m"), (DIFFULLAMA, "l")])
def test_inf_scripts_sample_from_each_layout(checkpoints, capsys, family, name):
    assert main(family, ["--model_name", str(checkpoints / name), "--diffusion_steps", "6", "--prompt", "the cat",
                         "--num_samples", "2", "--device", "cpu", "--flash_attn", "eager"]) == 0
    printed = capsys.readouterr().out
    assert "Unconditional generation" in printed and "Prefix generation" in printed
    prefix_part = printed.split("Prefix generation")[1].split("\n", 1)[1]
    assert prefix_part.startswith("the cat") and prefix_part.count("the cat") >= 2
    assert "<mask>" not in printed and "[¨M¨]" not in printed


@pytest.mark.slow
def test_inf_diffullama_script_runs_as_a_command(checkpoints):
    result = _run("inf_diffullama.py", "--model_name", str(checkpoints / "l"), "--diffusion_steps", "4",
                  "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Unconditional generation" in result.stdout and "Prefix generation" in result.stdout


def _broken_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    state = load_file(source / "model.safetensors")
    state.pop("denoise_model.ln_f.weight")
    save_file(state, target / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def _maskless_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    tiny_tokenizer(with_mask=False).save_pretrained(target)
    return target


@pytest.mark.parametrize("expected,case", [
    ("does not exist", "missing"),
    ("reachable Hub", "hub"),
    ("missing keys: transformer.ln_f.weight", "broken"),
    ("no mask token", "maskless"),
    ("generation length", "long prompt"),
    ("diffusion_steps must be >= 1", "no steps"),
])
def test_bad_input_gives_one_error_line_and_exit_code_2(checkpoints, tmp_path, capsys, expected, case):
    arguments = {
        "missing": ["--model_name", str(tmp_path / "missing")],
        "hub": ["--model_name", "no-such-org/no-such-model"],
        "broken": lambda: ["--model_name", str(_broken_checkpoint(checkpoints / "s", tmp_path / "b"))],
        "maskless": lambda: ["--model_name", str(_maskless_checkpoint(checkpoints / "s", tmp_path / "nomask"))],
        "long prompt": ["--model_name", str(checkpoints / "s"), "--prompt", "the cat " * 30],
        "no steps": ["--model_name", str(checkpoints / "s"), "--diffusion_steps", "0"],
    }[case]
    assert main(DIFFUGPT, arguments() if callable(arguments) else arguments) == 2
    captured = capsys.readouterr()
    error_lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], captured.err
    assert "Traceback" not in captured.err


@pytest.mark.slow
def test_the_script_itself_exits_2_with_one_error_line(tmp_path):
    result = _run("inf_diffugpt.py", "--model_name", str(tmp_path / "missing"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: checkpoint directory {tmp_path / 'missing'} does not exist"]


@pytest.mark.parametrize("flags, message", [
    (["--threshold", "1.5"], "error: threshold must be in (0, 1], got 1.5"),
    (["--block_length", "0"], "error: block_length must be >= 1, got 0"),
    (["--logits_temp", "-1"], "error: logits_temp must be >= 0 (0 means argmax), got -1.0"),
    (["--cache_refresh", "0"], "error: cache_refresh must be >= 1"),
])
def test_bad_sampler_flags_are_one_line_before_any_model_loads(flags, message, capsys):
    from llamafactory.quickstart import main

    # The checkpoint does not exist: reaching the loader would give another error.
    assert main(DIFFUGPT, ["--model_name", "/nonexistent/model", *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(message)


def test_fast_generation_flags_print_nfe_and_speed(checkpoints, capsys):
    from llamafactory.quickstart import main

    argv = ["--model_name", str(checkpoints / "s"), "--device", "cpu", "--gen_len", "20", "--diffusion_steps", "16",
            "--num_samples", "2", "--prompt", "the cat", "--block_length", "4", "--strategy", "threshold",
            "--threshold", "0.5", "--cache", "dual", "--stop_at_eos", "--greedy"]
    assert main(DIFFUGPT, argv) == 0
    out = capsys.readouterr().out
    reports = [line for line in out.splitlines() if line.startswith("(NFE per sample:")]
    assert len(reports) == 2 and all("tokens/s)" in line for line in reports)
    nfe = [int(n) for n in reports[1].split(":")[1].split(";")[0].split(",")]
    assert len(nfe) == 2 and all(1 <= n <= 16 for n in nfe)
