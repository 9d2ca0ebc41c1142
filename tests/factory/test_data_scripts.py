"""The data preparation scripts in LLaMA-Factory/data: GSM8K -> Diffusion-of-Thought, FineWeb shards."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.real_data import REAL_DATA

from .conftest import FACTORY_ROOT

SHARED_GSM8K = REAL_DATA / "gsm8k" / "test.jsonl"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, FACTORY_ROOT / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gsm_answers_keep_equations_and_the_final_answer():
    gsm = _script("gsm_prepare")
    answer = "She has 3 + 4 = <<3+4=7>>7 apples.\nThen 7 * 2 = <<7*2=14>>14.\n#### 14"
    assert gsm.to_diffusion_of_thought(answer) == "<<3+4=7>> <<7*2=14>> #### 14"
    assert gsm.to_diffusion_of_thought("It is simply\n#### 26") == "#### 26"
    with pytest.raises(ValueError, match="no '#### n'"):
        gsm.to_diffusion_of_thought("no final answer")


@pytest.mark.skipif(not SHARED_GSM8K.is_file(), reason="shared GSM8K data not available")
def test_real_gsm8k_test_set_converts():
    records = _script("gsm_prepare").convert(SHARED_GSM8K.read_text(encoding="utf-8").splitlines())
    assert len(records) == 1319
    assert records[0]["output"] == "<<16-3-4=9>> <<9*2=18>> #### 18"
    assert records[0]["instruction"].startswith("Janet")
    assert all("####" in r["output"] for r in records)


def test_fineweb_shards_are_cleaned_and_split(tmp_path):
    source = tmp_path / "raw.jsonl"
    texts = ["  short  ", *[f"document number {i} " + "x" * 30 for i in range(5)]]
    source.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    prepare = _script("data_prepare")
    files = prepare.write_shards(prepare.documents(str(source), "unused"), tmp_path / "out", shards=3, per_shard=2,
                                 min_chars=20)
    assert [p.name for p in files] == ["clean_00000.jsonl", "clean_00001.jsonl", "clean_00002.jsonl"]
    lines = [json.loads(line)["text"] for p in files for line in p.read_text().splitlines()]
    assert lines == [t.strip() for t in texts[1:]]
