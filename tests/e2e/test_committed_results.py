"""The root README's tiny-pipeline table is the committed example_output/results.json, row for row, and its
claims about that run hold (fast: reads committed files only; the run itself is tests/e2e/test_pipeline.py)."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import REPO, readme_table

RESULTS = REPO / "example_output" / "results.json"
README = REPO / "README.md"
TASKS = ("infill", "complete", "reverse")
# README row label -> results.json key (the diffusion rows are the one-step-per-token decoding)
ROWS = {
    "AR (`pt`), prefix only": "AR (pt) | greedy, prefix only",
    "AR (`sft` on reversal)": "AR (sft) | greedy",
    "diffusion (`ddm`), both sides": "diffusion (ddm) | T = n tokens",
    "diffusion (`ddm-sft` on reversal)": "diffusion (ddm-sft) | T = n tokens",
}

pytestmark = pytest.mark.skipif(not RESULTS.is_file(), reason="no committed tiny-pipeline run")


def test_the_readme_table_is_the_committed_results():
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    table = readme_table("| model | (a) infilling a middle span |")
    assert set(table) == set(ROWS)
    for label, key in ROWS.items():
        expected = [f"{results[key][task]:.1f}" if task in results[key] else "—" for task in TASKS]
        assert table[label] == expected, label


def test_the_readme_claims_about_the_step_counts_hold():
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    text = README.read_text(encoding="utf-8")
    spread = float(re.search(r"T = 1, 4 and 16 give the same within ([\d.]+)", text).group(1))
    for stage in ("ddm", "ddm-sft"):
        rows = [scores for key, scores in results.items() if key.startswith(f"diffusion ({stage}) |")]
        for task in rows[0]:
            values = [scores[task] for scores in rows]
            assert max(values) - min(values) <= spread + 1e-9, (stage, task, values)
