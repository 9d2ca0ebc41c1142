"""The lm-evaluation-harness model ``diffllm`` on local YAML tasks with json data, offline."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands import bare_environment

REPO = Path(__file__).resolve().parents[2]

DOCS = {
    "choice": [{"context": "The cat sees the", "choices": [" moon sky", " dog dog", " red fish"], "gold": 1},
               {"context": "one two three", "choices": [" dog dog", " slow river"], "gold": 0}],
    "word": [{"context": "the cat sees the", "target": " dog"}, {"context": "the dog sees the", "target": " cat"}],
    "generate": [{"question": "Which animal barks?", "answer": "dog dog dog"}],
    "text": [{"text": "the small cat sees the big dog under the tree and the bird sings in the sun"}],
}
TASK_YAML = {
    "choice": """output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
""",
    "word": """output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
""",
    "generate": """output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 3
metric_list:
  - metric: exact_match
    regexes_to_ignore: ["^\\\\s+"]
""",
    "text": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
""",
}


@pytest.fixture()
def task_dir(tmp_path) -> Path:
    """One local YAML task per request type, each reading its own json file."""
    for name, docs in DOCS.items():
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
        header = (f"task: planted_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                  "test_split: test\n")
        (tmp_path / f"planted_{name}.yaml").write_text(header + TASK_YAML[name].format())
    return tmp_path


@pytest.mark.slow
def test_registered_model_runs_local_tasks_from_python(planted_diffugpt_dir, task_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import dlm_eval.harness  # noqa: F401  (registers "diffllm")

    results = lm_eval.simple_evaluate(
        model="diffllm", model_args=f"pretrained={planted_diffugpt_dir},diffusion_steps=4,sampling_steps=3",
        tasks=[f"planted_{name}" for name in DOCS],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=4, device="cpu",
    )["results"]
    assert results["planted_choice"]["acc,none"] == 1.0
    assert results["planted_word"]["acc,none"] == 0.5  # " dog" is the one-step greedy answer, " cat" is not
    assert results["planted_generate"]["exact_match,none"] == 1.0
    perplexity = results["planted_text"]["word_perplexity,none"]
    assert math.isfinite(perplexity) and perplexity > 1.0


@pytest.mark.slow
def test_registered_model_runs_from_the_command_line(planted_diffugpt_dir, task_dir, tmp_path):
    command = [sys.executable, str(REPO / "evaluation" / "lm_eval_diffllm.py"), "--model", "diffllm",
               "--model_args", f"pretrained={planted_diffugpt_dir},diffusion_steps=4", "--tasks", "planted_choice",
               "--include_path", str(task_dir), "--device", "cpu", "--output_path", str(tmp_path / "out")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               env=bare_environment(tmp_path))
    assert completed.returncode == 0, completed.stderr[-2000:]
    written = next((tmp_path / "out").rglob("results_*.json"))
    assert json.loads(written.read_text())["results"]["planted_choice"]["acc,none"] == 1.0
