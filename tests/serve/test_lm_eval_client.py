"""lm-evaluation-harness's own ``local-completions`` model, run against the server, answers a generate-until
task exactly as the in-process ``diffllm`` model does on the same items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve.conftest import BUNDLED

QUESTIONS = ["Which animal barks?", "What colour is the sky?", "Where do fish live?", "Who wrote the play?",
             "When does the sun rise?", "How many legs has a cat?"]
# Greedy, 8 reverse steps over 8 new tokens, most confident first, stopping at a line break: the server gets
# the sampler settings as extra fields of the task's generation_kwargs, diffllm as model arguments.
SAMPLER = {"steps": 8, "strategy": "topk", "temperature": 0}
TASK = """task: served_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  steps: 8
  strategy: topk
  temperature: 0
metric_list:
  - metric: exact_match
"""


@pytest.fixture()
def task_dir(tmp_path) -> Path:
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "a dog"}) + "\n" for q in QUESTIONS))
    (tmp_path / "served_generate.yaml").write_text(TASK.format(data=data))
    return tmp_path


def _responses(model: str, model_args: str, task_dir: Path) -> list[str]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import dlm_eval.harness  # noqa: F401  (registers "diffllm")

    output = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["served_generate"],
                                     task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
                                     batch_size=4, log_samples=True)
    samples = sorted(output["samples"]["served_generate"], key=lambda sample: sample["doc_id"])
    return [sample["resps"][0][0] for sample in samples]


@pytest.mark.slow
def test_local_completions_against_the_server_equals_in_process_diffllm(server, task_dir):
    served = _responses("local-completions",
                        f"base_url={server.url}/v1/completions,model={BUNDLED.name},tokenizer_backend=None,"
                        "tokenized_requests=False,num_concurrent=3,max_retries=1", task_dir)
    in_process = _responses("diffllm", f"pretrained={BUNDLED},sampling_steps={SAMPLER['steps']},"
                                       f"strategy={SAMPLER['strategy']},temperature={SAMPLER['temperature']}", task_dir)
    assert len(served) == len(QUESTIONS)
    assert served == in_process
    assert any(text.strip() for text in served)  # the model wrote something, not only empty answers
