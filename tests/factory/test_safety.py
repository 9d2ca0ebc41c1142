"""llamafactory-cli keeps what it saved: checkpoints appear only when complete, a full disk or a kill mid-save
leaves the earlier checkpoint whole, resume picks a complete one, and bad inputs stop before the model loads."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import transformers
import yaml

from llamafactory.cli import main as cli
from llamafactory.errors import UserInputError
from llamafactory.train import run_exp

from .conftest import tiny_config

QUICK = {"do_eval": False, "val_size": 0, "plot_loss": False, "logging_steps": 1, "save_steps": 2}


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail_saving_at(monkeypatch, step: int, error: BaseException) -> None:
    """Stop the Trainer's save of ``step`` part-way: a 0-byte optimizer file is written, then ``error``."""
    original = transformers.Trainer._save_optimizer_and_scheduler

    def failing(self, output_dir):
        if self.state.global_step == step:
            Path(output_dir, "optimizer.pt").write_bytes(b"")
            raise error
        return original(self, output_dir)

    monkeypatch.setattr(transformers.Trainer, "_save_optimizer_and_scheduler", failing)


def _cli_train(config: dict, tmp_path: Path, capsys) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code = cli(["train", str(path)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.slow
def test_a_kill_or_a_full_disk_mid_save_leaves_the_earlier_checkpoint_whole(tiny_models, datasets_cache, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    output = tmp_path / "out"
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=2))
    saved = checksums(output / "checkpoint-2")

    with monkeypatch.context() as patch:  # a kill: no handler runs, the staging folder stays behind
        _fail_saving_at(patch, 4, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=6,
                                resume_from_checkpoint=True))
    assert not (output / "checkpoint-4").exists() and (output / ".checkpoint-4.partial").is_dir()
    assert checksums(output / "checkpoint-2") == saved

    with monkeypatch.context() as patch:  # the disk fills up during the save of step 4
        _fail_saving_at(patch, 4, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "optimizer.pt"))
        code, err = _cli_train(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=6,
                                           resume_from_checkpoint=True), tmp_path, capsys)
    assert code == 2 and err.splitlines()[-1].startswith("error: cannot write checkpoint")
    assert "no space left" in err and f"{output / 'checkpoint-2'} is intact" in err and "Traceback" not in err
    assert sorted(p.name for p in output.iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]
    assert checksums(output / "checkpoint-2") == saved

    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=6,
                        resume_from_checkpoint=True))
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert {p.name for p in output.iterdir() if "checkpoint" in p.name} == {"checkpoint-2", "checkpoint-4",
                                                                             "checkpoint-6"}


@pytest.mark.slow
def test_resume_true_takes_the_newest_complete_checkpoint_and_an_incomplete_one_is_refused(
        tiny_models, datasets_cache, tmp_path):
    output = tmp_path / "out"
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=4))
    broken = output / "checkpoint-9"  # as an in-place save killed part-way leaves it
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"")
    (broken / "optimizer.pt").write_bytes(b"")
    with pytest.raises(UserInputError, match=f"resume_from_checkpoint {broken} is an incomplete checkpoint "
                                             "\\(no trainer_state.json; its save was interrupted\\)"):
        run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=6,
                            resume_from_checkpoint=str(broken)))
    (broken / "trainer_state.json").write_text("{}")
    with pytest.raises(UserInputError, match="incomplete checkpoint \\(empty file\\(s\\) model.safetensors, optimizer"):
        run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=6,
                            resume_from_checkpoint=str(broken)))
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=6,
                        resume_from_checkpoint="true"))
    logged = [e["step"] for e in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert logged == [1, 2, 3, 4, 5, 6]  # continued from checkpoint-4, not from the broken checkpoint-9


@pytest.mark.slow
def test_saved_files_get_the_permissions_of_a_plain_write(tiny_models, datasets_cache, tmp_path):
    previous = os.umask(0o022)
    try:
        run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, tmp_path / "out", datasets_cache, **QUICK, max_steps=2))
    finally:
        os.umask(previous)
    for weights in (tmp_path / "out" / "model.safetensors", tmp_path / "out" / "checkpoint-2" / "model.safetensors"):
        assert stat.S_IMODE(weights.stat().st_mode) == 0o644
    assert not list((tmp_path / "out").glob(".*"))


def _data_dir(tmp_path: Path, **files: bytes) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name, content in files.items():
        (data / name.replace("_", ".")).write_bytes(content)
    (data / "dataset_info.json").write_text(json.dumps({name: {"file_name": name.replace("_", ".")} for name in files}))
    return data


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if a model is loaded: the checks below must stop the run before."""
    import llamafactory.train.components as components

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(components, "load_model", refuse)


def test_bad_data_stops_before_the_model_loads(tiny_models, datasets_cache, tmp_path, no_model_loading):
    data = _data_dir(tmp_path, bad_jsonl=b'{"text": "fine"}\n{"text": "caf\xe9"}\n', bad_txt=b"one\ntwo \xff\n",
                     empty_jsonl=b"")
    expected = {"bad_jsonl": "bad.jsonl: byte 30, line 2, is not valid UTF-8",
                "bad_txt": "bad.txt: byte 8, line 2, is not valid UTF-8", "empty_jsonl": "empty.jsonl is empty"}
    for dataset, message in expected.items():
        with pytest.raises(UserInputError, match=message):
            run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, tmp_path / "out", datasets_cache, **QUICK,
                                dataset_dir=str(data), dataset=dataset))


def test_bad_model_and_output_settings_stop_before_the_model_loads(tiny_models, datasets_cache, tmp_path,
                                                                   monkeypatch, no_model_loading):
    def attempt(**overrides):
        settings = {"output_dir": tmp_path / "out", **overrides}
        return run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, settings.pop("output_dir"), datasets_cache, **QUICK,
                                   **settings))

    with pytest.raises(UserInputError, match="cutoff_len 129 needs 129 positions, more than the 128 the model covers"):
        attempt(cutoff_len=129)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserInputError, match="output_dir .*a_file/out: .*a_file is a file, not a folder"):
        attempt(output_dir=tmp_path / "a_file" / "out")
    with monkeypatch.context() as patch:
        import tempfile

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        patch.setattr(tempfile, "mkstemp", read_only)
        with pytest.raises(UserInputError, match="output_dir .*out is not writable \\(the file system is read-only"):
            attempt()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserInputError, match=f"{damaged / 'model.safetensors'} is not a readable safetensors file"):
        attempt(checkpoint_dir=str(damaged))
    bare = tmp_path / "bare"  # GPT-2 weights and config, no tokenizer files
    for name in ("config.json", "model.safetensors"):
        bare.mkdir(exist_ok=True)
        (bare / name).write_bytes((tiny_models / "gpt2" / name).read_bytes())
    with pytest.raises(UserInputError, match="no usable tokenizer: the tokenizer of .*bare cannot encode text"):
        run_exp({**tiny_config("gpt2_ddm.yaml", tiny_models, tmp_path / "out", datasets_cache, **QUICK),
                 "model_name_or_path": str(bare)})
    assert not (tmp_path / "out").exists()
