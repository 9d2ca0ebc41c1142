"""The synthetic corpus: seeded, in the registry formats the stages read, and with middle fields that
only the text after them determines (what the infilling evaluation relies on)."""

from __future__ import annotations

import json
import random

from llamafactory.hparams import get_train_args


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_corpus_other_seed_other_corpus(synthetic):
    first = [r.text for r in synthetic.corpus_records(200, seed=3)]
    assert first == [r.text for r in synthetic.corpus_records(200, seed=3)]
    assert first != [r.text for r in synthetic.corpus_records(200, seed=4)]


def test_corpus_mixes_every_kind(synthetic):
    kinds = {record.kind for record in synthetic.corpus_records(500, seed=0)}
    assert kinds == {"plain", "fact", "echo", "sum", "reverse"}


def test_middle_field_is_determined_by_the_suffix(synthetic):
    capital_to_country = {capital: country for country, capital in synthetic.CAPITALS.items()}
    for record in synthetic.infill_records(60, seed=1):
        suffix = record.suffix.split()
        if record.kind == "fact":
            assert record.middle == capital_to_country[suffix[1]]
        elif record.kind == "echo":
            assert record.middle == f"{suffix[-2]} {suffix[2]}"
        else:
            assert int(record.prefix.split()[0]) + int(record.middle) == int(suffix[1])


def test_infill_prefixes_do_not_reveal_the_middle(synthetic):
    """Over many records the same prefix occurs with different middles: a left-to-right model must guess."""
    middles_by_prefix: dict[tuple[str, str], set[str]] = {}
    for record in synthetic.infill_records(600, seed=1):
        middles_by_prefix.setdefault((record.kind, record.prefix), set()).add(record.middle)
    assert all(len(middles) > 1 for middles in middles_by_prefix.values())


def test_completion_target_follows_from_the_prefix(synthetic):
    records = synthetic.infill_records(30, seed=2)
    for record, completion in zip(records, synthetic.completions(records)):
        assert record.text.startswith(f"{completion.prefix} {completion.target} ")
        if record.kind == "fact":
            assert completion.target == synthetic.CAPITALS[record.middle]


def test_reversal_examples(synthetic):
    rng = random.Random(0)
    for _ in range(50):
        sequence, reversed_sequence = synthetic.reverse_pair(rng)
        assert reversed_sequence.split() == sequence.split()[::-1]
        low, high = synthetic.REVERSE_LENGTHS
        assert low <= len(sequence.split()) <= high


def test_written_dataset_keeps_test_reversals_out_of_training(synthetic, tiny_data):
    trained = {row["prompt"] for row in read_jsonl(tiny_data / "tiny_reverse.jsonl")}
    trained |= {
        row["text"].split(" gives ")[0] + " gives"
        for row in read_jsonl(tiny_data / "tiny_corpus.jsonl") if row["text"].startswith("reverse ")
    }
    tests = read_jsonl(tiny_data / "test_reverse.jsonl")
    assert len(tests) == 30
    assert all(row["prompt"].startswith("reverse ") and row["prompt"].endswith(" gives") for row in tests)
    assert not trained & {row["prompt"] for row in tests}
    assert synthetic.reversed_sequence_of(tests[0]["prompt"]).split()[::-1] == tests[0]["response"].split()


def test_registry_is_accepted_by_the_training_stages(tiny_data, tmp_path):
    for stage, dataset in (("pt", "tiny_corpus"), ("ddm", "tiny_corpus"), ("ddm-sft", "tiny_reverse")):
        get_train_args({
            "model_name_or_path": str(tmp_path), "stage": stage, "do_train": True, "finetuning_type": "full",
            "dataset": dataset, "dataset_dir": str(tiny_data), "cutoff_len": 24, "output_dir": str(tmp_path / stage),
        })
