"""Prediction bookkeeping and the reproducible training noise."""

from __future__ import annotations

import json

from llamafactory.ddm import noise_seed
from llamafactory.train.predictions import (
    Prediction,
    gather_predictions,
    gsm_answer,
    prediction_metrics,
    save_predictions,
    shard_indices,
)


def test_gsm_answers_are_normalised():
    assert gsm_answer("<<3*4=12>> #### 12") == "12"
    assert gsm_answer("so #### 1,000.50 dollars") == "1000.5"
    assert gsm_answer("#### 18.0") == "18" and gsm_answer("#### -3") == "-3"
    assert gsm_answer("no answer here") is None


def test_accuracy_only_when_every_label_has_an_answer():
    scored = [Prediction(0, "x #### 5", "#### 5"), Prediction(1, "#### 6", "#### 7")]
    assert prediction_metrics(scored) == {"predict_samples": 2.0, "predict_accuracy": 0.5}
    assert "predict_accuracy" not in prediction_metrics([Prediction(0, "text", "free text")])


def test_shards_cover_every_index_with_equal_counts():
    shards = [shard_indices(7, 3, rank) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert sorted(set(i for s in shards for i in s)) == list(range(7))
    merged = gather_predictions([Prediction(i, str(i), "") for s in shards for i in s], world_size=1)
    assert [p.index for p in merged] == list(range(7))


def test_predictions_file(tmp_path):
    path = save_predictions(tmp_path, [Prediction(0, "a", "b")])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"predict": "a", "label": "b"}]


def test_noise_seed_depends_on_step_and_global_micro_batch():
    seeds = {noise_seed(42, step, micro, rank, 2) for step in range(3) for micro in range(2) for rank in range(2)}
    assert len(seeds) == 12 and all(0 <= seed < 2**63 for seed in seeds)
    assert noise_seed(43, 1, 0, 0) != noise_seed(42, 1, 0, 0)
    # Two ranks without accumulation draw what one process accumulating two micro-batches draws.
    assert [noise_seed(42, 5, 0, rank, 2) for rank in range(2)] == [noise_seed(42, 5, micro, 0, 1) for micro in range(2)]
