"""The Hugging Face-native format: the three released layouts export, reload through the Auto classes with
the same logits and generate the same tokens as the core; the generation config round-trips; bad input
to ``llamafactory-cli export`` is one error line and touches nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer
from transformers.generation.utils import GenerationMixin

from llamafactory.cli import main as cli
from llamafactory.ddm import generate, load_diffusion_lm
from llamafactory.ddm.hf import DiffuGPTForMaskedLM, DiffuLLaMAForMaskedLM, DiffusionGenerationConfig
from llamafactory.ddm.hf.export import export_native
from tests.tiny import write_diffugpt_m, write_diffugpt_s, write_diffullama
from tests.tolerance import assert_tensors_close

WRITERS = {"diffugpt-s": write_diffugpt_s, "diffugpt-m": write_diffugpt_m, "diffullama": write_diffullama}
CLASSES = {"diffugpt-s": DiffuGPTForMaskedLM, "diffugpt-m": DiffuGPTForMaskedLM, "diffullama": DiffuLLaMAForMaskedLM}
SETTINGS = dict(max_new_tokens=8, steps=8, block_length=4, strategy="confidence", top_p=None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (released folder, its export)."""
    root = tmp_path_factory.mktemp("hf_native")
    folders = {}
    for name, write in WRITERS.items():
        write(root / name)
        folders[name] = (root / name, export_native(root / name, root / f"{name}-hf"))
    return folders


def _seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def _prompts(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of a 5-token and a 2-token prompt."""
    ids = torch.tensor([[0, 7, 8, 9, 10], [2, 2, 2, 0, 11]]).clamp(max=vocab - 1)
    return ids, (torch.arange(5)[None, :] >= torch.tensor([[0], [3]])).long()


@pytest.mark.parametrize("name", sorted(WRITERS))
@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForMaskedLM], ids=["AutoModel", "AutoModelForMaskedLM"])
def test_released_layout_reloads_with_the_same_logits_and_tokens(exported, name, auto_class):
    source_dir, export_dir = exported[name]
    source, _ = load_diffusion_lm(source_dir)
    model = auto_class.from_pretrained(export_dir).eval()
    assert type(model) is CLASSES[name]
    assert model.config.is_causal is False and model.config.mask_token_id == source.mask_id
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, source(ids), rtol=0, atol=1e-5)
    prompts, mask = _prompts(source.config.vocab_size)
    expected = generate(source, prompts, mask, generator=_seeded(1, 2), temperature=1.0, **SETTINGS)
    actual = model.diffusion_generate(prompts, mask, generator=_seeded(1, 2), temperature=1.0, **SETTINGS)
    assert actual.tolist() == expected.tolist()


def test_export_keeps_the_layout_files_and_the_special_tokens(exported):
    _, export_dir = exported["diffullama"]
    files = {p.name for p in export_dir.iterdir()}
    assert {"config.json", "generation_config.json", "README.md", "tokenizer.json"} <= files
    assert not any(name.endswith(".py") for name in files)  # code only with --self-contained
    config = json.loads((export_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    assert config["model_type"] == "diffullama" and config["architectures"] == ["DiffuLLaMAForMaskedLM"]
    assert config["mask_token_id"] == tokenizer.mask_token_id and config["sep_token_id"] == tokenizer.sep_token_id
    assert "model.diffusion_generate(**batch" in (export_dir / "README.md").read_text()
    _, gpt2_dir = exported["diffugpt-s"]
    with safe_open(str(gpt2_dir / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys  # GPT2LMHeadModel's names, head tied


def test_every_loader_reads_an_export(exported):
    from model import DiscreteDiffusionModel

    source_dir, export_dir = exported["diffugpt-s"]
    source, _ = load_diffusion_lm(source_dir)
    reloaded, _ = load_diffusion_lm(export_dir)
    assert reloaded.tokens == source.tokens
    ids = torch.randint(5, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids), source(ids), rtol=0, atol=1e-5)
        original = DiscreteDiffusionModel.from_pretrained(str(export_dir))
        torch.testing.assert_close(original(ids), source(ids), rtol=0, atol=1e-5)
    assert AutoConfig.from_pretrained(export_dir).model_type == "diffugpt"


def test_generate_is_the_diffusion_generator(exported, monkeypatch):
    def autoregressive(*args, **kwargs):
        raise AssertionError("transformers' left-to-right generate was called")

    monkeypatch.setattr(GenerationMixin, "generate", autoregressive)
    source_dir, export_dir = exported["diffugpt-m"]
    model = AutoModel.from_pretrained(export_dir).eval()
    source, _ = load_diffusion_lm(source_dir)
    prompts, mask = _prompts(source.config.vocab_size)
    expected = generate(source, prompts, mask, generator=_seeded(5, 6), **SETTINGS)
    by_keyword = model.generate(input_ids=prompts, attention_mask=mask, generator=_seeded(5, 6), **SETTINGS)
    by_position = model.generate(prompts, attention_mask=mask, generator=_seeded(5, 6), **SETTINGS)
    assert by_keyword.tolist() == by_position.tolist() == expected.tolist()
    assert not (by_keyword[:, prompts.shape[1]:] == model.config.mask_token_id).any()


def test_generation_config_round_trips_and_supplies_the_defaults(exported, tmp_path):
    source_dir, export_dir = exported["diffugpt-s"]
    model = AutoModel.from_pretrained(export_dir)
    assert isinstance(model.generation_config, DiffusionGenerationConfig)
    assert (model.generation_config.steps, model.generation_config.temperature, model.generation_config.top_p) == \
        (64, 0.95, 0.9)  # the original sampler's defaults
    chosen = dict(max_new_tokens=6, steps=6, block_length=3, strategy="eb", confidence="entropy", top_p=None,
                  temperature=0.0, cache="dual", cache_refresh=2, eb_gamma=0.5)
    model.generation_config.update(**chosen)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(reloaded.generation_config, DiffusionGenerationConfig)
    assert {key: getattr(reloaded.generation_config, key) for key in chosen} == chosen
    source, _ = load_diffusion_lm(source_dir)
    prompts, mask = _prompts(source.config.vocab_size)
    expected = generate(source, prompts, mask, **chosen)
    assert reloaded.diffusion_generate(prompts, mask).tolist() == expected.tolist()
    aliased = reloaded.diffusion_generate(prompts, mask, gen_length=4, block_size=2, alg="maskgit_plus")
    assert aliased.tolist() == generate(source, prompts, mask, **{**chosen, "max_new_tokens": 4, "block_length": 2,
                                                                  "strategy": "confidence", "confidence": "prob",
                                                                  "schedule": "dream",
                                                                  "confidence_distribution": "full"}).tolist()


def test_a_left_padded_batch_equals_each_row_alone(exported):
    _, export_dir = exported["diffullama"]
    model = AutoModel.from_pretrained(export_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(export_dir, padding_side="left")
    texts = ["the cat sees a big red house", "one two", "the quick dog"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=8, steps=8, block_length=4, temperature=1.0, top_p=None, cache="prefix")
    together = model.diffusion_generate(**batch, generator=_seeded(0, 1, 2), **settings)
    for row, text in enumerate(texts):
        alone = model.diffusion_generate(**tokenizer([text], return_tensors="pt"), generator=_seeded(row), **settings)
        assert together[row, together.shape[1] - alone.shape[1]:].tolist() == alone[0].tolist()
    decoded = tokenizer.batch_decode(together, skip_special_tokens=True)
    assert [text.startswith(prompt) for text, prompt in zip(decoded, texts)] == [True] * 3


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``llamafactory-cli export``, transformers' progress bars left out."""
    capsys.readouterr()
    code = cli(["export", *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in lines if not line.startswith(("Loading weights", "Writing model shards"))]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("case", ["no_weights", "unknown_layout", "unknown_architecture", "no_tokenizer", "not_empty",
                                  "is_source"])
def test_bad_input_is_one_error_line_and_touches_nothing(exported, tmp_path, capsys, case):
    source_dir, _ = exported["diffugpt-s"]
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    argv = ["--model_name_or_path", str(source_dir), "--export_dir", str(target), "--overwrite"]
    broken = tmp_path / "broken"
    broken.mkdir()
    AutoTokenizer.from_pretrained(source_dir).save_pretrained(broken)
    if case == "no_weights":
        argv[1], expected = str(broken), "holds no model weights"
    elif case == "unknown_layout":
        (broken / "config.json").write_bytes((source_dir / "config.json").read_bytes())
        save_file({"encoder.layer.weight": torch.zeros(2, 2)}, broken / "model.safetensors")
        argv[1], expected = str(broken), "does not match the model"
    elif case == "unknown_architecture":
        from transformers import BertConfig, BertForMaskedLM

        BertForMaskedLM(BertConfig(vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)).save_pretrained(broken)
        argv[1], expected = str(broken), "cannot export a bert model"
    elif case == "no_tokenizer":
        (tmp_path / "bare").mkdir()
        for name in ("config.json", "model.safetensors"):
            (tmp_path / "bare" / name).write_bytes((source_dir / name).read_bytes())
        argv[1], expected = str(tmp_path / "bare"), "no usable tokenizer"
    elif case == "not_empty":
        argv, expected = argv[:-1], "is not empty; pass --overwrite"
    else:
        argv[3], expected = str(source_dir), "is the source checkpoint"
    before = _snapshot(target), _snapshot(source_dir)
    code, lines = _run(argv, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
    assert (_snapshot(target), _snapshot(source_dir)) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".target")) == []


def test_overwrite_replaces_the_folder_whole(exported, tmp_path, capsys):
    source_dir, _ = exported["diffugpt-s"]
    target = tmp_path / "target"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    code, _ = _run(["--model_name_or_path", str(source_dir), "--export_dir", str(target), "--overwrite"], capsys)
    assert code == 0 and not (target / "stale.txt").exists() and (target / "config.json").exists()


# Run where the package cannot be imported: every sys.path entry holding a `llamafactory` folder is dropped
# (the editable install's .pth entry included), and the script proves the import fails before loading.
_WITHOUT_PACKAGE = """
import importlib.util, json, os, sys
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or os.getcwd(), "llamafactory"))]
try:
    import llamafactory  # noqa: F401
    importable = True
except ImportError:
    importable = False
import torch
from transformers import AutoModel, AutoTokenizer
folder, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left", trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
batch = tokenizer(["the cat sees", "one"], return_tensors="pt", padding=True)
generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
tokens = model.diffusion_generate(**batch, generator=generators, max_new_tokens=8, steps=8, block_length=4)
with torch.no_grad():
    logits = model(input_ids=ids).logits
print(json.dumps({"importable": importable, "loaded": "llamafactory" in sys.modules, "module": type(model).__module__,
                  "tokens": tokens.tolist(), "batch": batch["input_ids"].tolist(), "mask": batch["attention_mask"].tolist(),
                  "logits": logits.tolist()}))
"""


@pytest.mark.parametrize("name", ["diffugpt-s", "diffullama"])
def test_self_contained_export_loads_and_generates_without_the_package(exported, tmp_path, capsys, name):
    source_dir, _ = exported[name]
    folder = tmp_path / "standalone"
    code, _ = _run(["--model_name_or_path", str(source_dir), "--export_dir", str(folder), "--self-contained"], capsys)
    assert code == 0 and "auto_map" in json.loads((folder / "config.json").read_text())
    ids = torch.randint(5, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _WITHOUT_PACKAGE, str(folder), json.dumps(ids.tolist())],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["importable"] is False and report["loaded"] is False
    assert report["module"].startswith("transformers_modules.")
    source, _ = load_diffusion_lm(source_dir)
    with torch.no_grad():
        assert_tensors_close(torch.tensor(report["logits"]), source(ids))
    expected = generate(source, torch.tensor(report["batch"]), torch.tensor(report["mask"]), generator=_seeded(3, 4),
                        max_new_tokens=8, steps=8, block_length=4)
    assert report["tokens"] == expected.tolist()
    assert type(AutoModel.from_pretrained(folder)) is CLASSES[name]  # with the package: its classes, no remote code


def test_the_entry_points_read_an_export(exported, capsys):
    """inf_diffullama.py, the 7B trainer's --model and the lm-eval model load an exported folder."""
    from diffullama_training.run import load_model
    from diffullama_training.settings import TrainSettings
    from dlm_eval.harness import DiffLLM
    from llamafactory.quickstart import DIFFULLAMA, main

    source_dir, export_dir = exported["diffullama"]
    source, _ = load_diffusion_lm(source_dir)
    assert main(DIFFULLAMA, ["--model_name", str(export_dir), "--diffusion_steps", "4", "--prompt", "the cat",
                             "--num_samples", "1", "--device", "cpu"]) == 0
    assert "Prefix generation" in capsys.readouterr().out
    settings = TrainSettings(output_dir=Path("unused"), dataset=Path("unused"), gradient_checkpointing=False)
    model, tokenizer, tokens = load_model(settings, export_dir, torch.float32)
    assert tokens.mask_id == source.mask_id and tokenizer is not None
    harness = DiffLLM(str(export_dir), device="cpu", dtype="float32")
    assert harness.engine.model.tokens == source.tokens
    ids = torch.randint(5, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, source(ids), rtol=0, atol=1e-5)
