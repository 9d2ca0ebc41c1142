"""Data: registry and file formats, column mapping, the stage sequence layouts (docs/design.md#supervised-fine-tuning-layout-ddm-sft), tokenized_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llamafactory.data import (
    IGNORE_INDEX,
    SequenceCollator,
    get_template,
    load_raw_splits,
    load_tokenized,
    tokenize_splits,
)
from llamafactory.data.processors import ddm_sft_batch, fit_prompt_response, pretrain_batch, supervised_batch
from llamafactory.ddm import FramingTokens
from llamafactory.errors import UserInputError
from llamafactory.hparams import get_train_args
from tests.tiny import tiny_tokenizer

TOKENS = FramingTokens(bos=1, eos=2, pad=3, sep=4)


class CharTokenizer:
    """One token per character (id = code point), so expected sequences can be written by hand."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in text] for text in texts]}


def _batch(prompt: str, response: str, system: str = "") -> dict[str, list[str]]:
    return {"prompt": [prompt], "response": [response], "system": [system]}


def test_ddm_sft_layout_is_spec5():
    out = ddm_sft_batch(_batch("ab", "xyz"), tokenizer=CharTokenizer(), tokens=TOKENS, cutoff_len=10,
                        template=get_template("empty"))
    assert out["input_ids"] == [[1, 97, 98, 4, 120, 121, 122, 2, 3, 3]]
    assert out["src_mask"] == [[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]]  # BOS + prompt + SEP are given


def test_ddm_sft_too_long_keeps_the_response_and_cuts_the_prompt_from_the_left():
    out = ddm_sft_batch(_batch("abcdef", "xyz"), tokenizer=CharTokenizer(), tokens=TOKENS, cutoff_len=8,
                        template=get_template("empty"))
    assert out["input_ids"] == [[1, ord("e"), ord("f"), 4, 120, 121, 122, 2]]
    assert out["src_mask"] == [[1, 1, 1, 1, 0, 0, 0, 0]]


def test_fit_prompt_response_cuts_the_response_end_when_it_alone_is_too_long():
    assert fit_prompt_response([1, 2], [3, 4, 5, 6], 3) == ([], [3, 4, 5])
    assert fit_prompt_response([1, 2, 3], [4], 3) == ([2, 3], [4])


def test_sft_labels_hide_bos_and_prompt():
    out = supervised_batch(_batch("ab", "x"), tokenizer=CharTokenizer(), tokens=TOKENS, cutoff_len=16,
                           template=get_template("empty"), train_on_prompt=False)
    assert out["input_ids"] == [[1, 97, 98, 120, 2]]
    assert out["labels"] == [[IGNORE_INDEX] * 3 + [120, 2]]


def test_templates_render_prompt_and_system():
    assert get_template("empty").render("q") == "q"
    assert get_template("llama2").render("q", "be brief") == "[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nq [/INST]"
    assert get_template("alpaca").render("q").endswith("### Instruction:\nq\n\n### Response:\n")


def test_pretrain_packing_concatenates_and_drops_the_tail():
    batch = {"text": ["abc", "defgh"]}  # + EOS each: 4 + 6 = 10 tokens -> two blocks of 4
    packed = pretrain_batch(batch, tokenizer=CharTokenizer(), tokens=TOKENS, cutoff_len=4, packing=True)
    assert packed["input_ids"] == [[97, 98, 99, 2], [100, 101, 102, 103]]
    plain = pretrain_batch(batch, tokenizer=CharTokenizer(), tokens=TOKENS, cutoff_len=4, packing=False)
    assert plain["input_ids"] == [[97, 98, 99, 2], [100, 101, 102, 103]]


def test_collator_pads_and_masks():
    collate = SequenceCollator(pad_id=0, with_labels=True)
    batch = collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    diffusion = SequenceCollator(pad_id=0, with_labels=False)([{"input_ids": [1, 2], "src_mask": [1, 0]}])
    assert "labels" not in diffusion and diffusion["src_mask"].dtype == torch.bool


def _texts(split) -> list[str]:
    """Character-tokenised pre-training sequences back to their texts (EOS dropped), sorted."""
    return sorted("".join(map(chr, record["input_ids"][:-1])) for record in split)


def _write_registry(directory: Path, entries: dict) -> None:
    (directory / "dataset_info.json").write_text(json.dumps(entries))


def _args(directory: Path, cache: Path, **overrides):
    config = {"model_name_or_path": "gpt2", "stage": "ddm-sft", "do_train": True, "finetuning_type": "full",
              "dataset_dir": str(directory), "output_dir": str(directory / "out"), "cache_dir": str(cache),
              "cutoff_len": 32, **overrides}
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(config)
    return data_args, model_args, training_args, finetuning_args.stage


def test_alpaca_columns_and_file_formats(tmp_path, datasets_cache):
    records = [{"instruction": "add", "input": "2 3", "output": "5"}, {"instruction": "say hi", "output": "hi"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "b.csv").write_text("question,answer\nwhy,because\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "part.json").write_text(json.dumps(records[:1]))
    (tmp_path / "c.txt").write_text("one line\nanother line\n")
    _write_registry(tmp_path, {
        "alpaca": {"file_name": "a.jsonl"},
        "qa": {"file_name": "b.csv", "columns": {"prompt": "question", "response": "answer"}},
        "dir": {"file_name": "folder"},
        "text": {"file_name": "c.txt", "columns": {"prompt": "text"}},
    })
    splits = load_raw_splits(*_args(tmp_path, datasets_cache, dataset="alpaca,qa,dir"))
    assert list(splits.train["prompt"]) == ["add\n2 3", "say hi", "why", "add\n2 3"]
    assert list(splits.train["response"]) == ["5", "hi", "because", "5"]
    text = load_raw_splits(*_args(tmp_path, datasets_cache, dataset="text", stage="ddm"))
    assert list(text.train["text"]) == ["one line", "another line"]


def test_parquet_max_samples_and_val_size(tmp_path, datasets_cache):
    from datasets import Dataset

    Dataset.from_dict({"text": [f"l{i}" for i in range(20)]}).to_parquet(tmp_path / "p.parquet")
    _write_registry(tmp_path, {"p": {"file_name": "p.parquet"}})
    args = _args(tmp_path, datasets_cache, dataset="p", stage="ddm", val_size=4, max_samples=10, packing=False)
    raw = load_raw_splits(*args)
    assert list(raw.train["text"]) == [f"l{i}" for i in range(10)] and raw.eval is None
    splits = tokenize_splits(raw, CharTokenizer(), TOKENS, args[0], args[2], "ddm")
    assert (len(splits.train), len(splits.eval)) == (6, 4)
    assert sorted(_texts(splits.train) + _texts(splits.eval)) == sorted(f"l{i}" for i in range(10))


def test_val_size_of_a_prediction_only_run_may_take_everything(tmp_path, datasets_cache):
    (tmp_path / "t.json").write_text(json.dumps([{"text": "abc"}, {"text": "de"}]))
    _write_registry(tmp_path, {"t": {"file_name": "t.json"}})
    args = _args(tmp_path, datasets_cache, dataset="t", stage="ddm", do_train=False, do_predict=True, val_size=64,
                 packing=False)
    splits = tokenize_splits(load_raw_splits(*args), CharTokenizer(), TOKENS, args[0], args[2], "ddm")
    assert splits.train is None and len(splits.eval) == 2
    with pytest.raises(UserInputError, match="val_size 64 leaves no training data"):
        train_args = _args(tmp_path, datasets_cache, dataset="t", stage="ddm", val_size=64, packing=False)
        tokenize_splits(load_raw_splits(*train_args), CharTokenizer(), TOKENS, train_args[0], train_args[2], "ddm")


@pytest.mark.parametrize(
    ("entry", "files", "message"),
    [
        ({"file_name": "gone.json"}, {}, r"dataset 'd' \(gone.json\): file .*gone.json does not exist"),
        ({"file_name": "q.json", "columns": {"prompt": "question", "response": "answer"}},
         {"q.json": [{"question": "a", "reply": "b"}]}, "column 'answer' \\(role response\\) not found.*question, reply"),
        ({"file_name": "x.xml"}, {"x.xml": "<a/>"}, "expected files of one type"),
    ],
)
def test_bad_data_fails_with_the_name(tmp_path, datasets_cache, entry, files, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    _write_registry(tmp_path, {"d": entry})
    with pytest.raises(UserInputError, match=message):
        load_raw_splits(*_args(tmp_path, datasets_cache, dataset="d"))


def test_streaming_reads_lazily(tmp_path, datasets_cache):
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps({"text": f"t{i}"}) for i in range(10)))
    _write_registry(tmp_path, {"s": {"file_name": "s.jsonl"}})
    args = _args(tmp_path, datasets_cache, dataset="s", stage="ddm", streaming=True, max_steps=3, val_size=2,
                 packing=False)
    splits = tokenize_splits(load_raw_splits(*args), CharTokenizer(), TOKENS, args[0], args[2], "ddm")
    assert _texts(splits.eval) == ["t0", "t1"]
    assert _texts(splits.train) == [f"t{i}" for i in range(2, 10)]


def test_tokenized_path_saves_then_reloads(tmp_path, datasets_cache):
    (tmp_path / "g.json").write_text(json.dumps([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(6)]))
    _write_registry(tmp_path, {"g": {"file_name": "g.json"}})
    saved = tmp_path / "tokenized"
    data_args, model_args, training_args, stage = _args(tmp_path, datasets_cache, dataset="g", val_size=2,
                                                        tokenized_path=str(saved))
    tokenizer = tiny_tokenizer()
    tokens = FramingTokens(bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
                           sep=tokenizer.sep_token_id)
    raw = load_raw_splits(data_args, model_args, training_args, stage)
    assert tokenize_splits(raw, tokenizer, tokens, data_args, training_args, stage) is None  # saved: run stops
    assert load_raw_splits(data_args, model_args, training_args, stage) is None  # next run: use the saved data
    reloaded = load_tokenized(data_args, training_args, stage)
    assert (len(reloaded.train), len(reloaded.eval)) == (4, 2)
    assert all(len(ids) == 32 for ids in reloaded.train["input_ids"])
    with pytest.raises(UserInputError, match="lacks column.*src_mask"):
        load_tokenized(data_args, training_args, "sft")
