"""Task loaders read each benchmark's published format: project fixtures, the real files, and Hub rows."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter

import pytest

from dlm_eval import TASKS, DataSource
from dlm_eval.tasks.choice import split_options
from dlm_eval.text import Piece
from llamafactory.errors import UserInputError

from .common import FIXTURES

# Record counts stated in each data set's published source (docs/data.md).
REAL_COUNTS = {"triviaqa": 3000, "squad": 10570, "lambada": 5153, "lambada_openai": 5153, "hellaswag": 10042,
               "winogrande": 1267, "siqa": 1954, "piqa": 1838, "gsm8k": 1319, "rocstories": 1871, "humaneval": 1033}


def load(task: str, data_dir=FIXTURES):
    return TASKS[task].load(DataSource(data_dir))


def test_every_task_has_a_real_count():
    assert set(REAL_COUNTS) == set(TASKS)


def test_lambada_target_is_the_last_word():
    examples = load("lambada")
    assert [e.target for e in examples] == ["house", "ten", "sky"]
    assert examples[2].context.endswith("i do n't see a star in the")


def test_lambada_openai_reads_context_and_continuation():
    examples = load("lambada_openai")
    assert [e.target for e in examples] == ["house", "ten", "sky"]
    assert examples[1].context.startswith('"One, two, three,"')


def test_hellaswag_reads_six_line_tasks():
    examples = load("hellaswag")
    assert [e.gold for e in examples] == [1, 0, 3]
    context = "Walking the dog: A man walks a small dog along the river. he"  # the text file lost ctx_b's capital
    assert examples[0].harness[1] == (context, " stops and lets the dog drink some water.")
    assert examples[0].original[1] == (Piece(context, special_tokens=True),
                                       Piece("stops and lets the dog drink some water.", special_tokens=True, scored=True))
    assert all(len(e.original) == len(e.harness) == 4 for e in examples)


def test_winogrande_original_scores_option_and_rest_harness_only_the_rest():
    example = load("winogrande")[2]
    assert example.gold == 1
    assert example.original[0] == (Piece("Anna gave the fish to Ben because "), Piece("Anna", scored=True),
                                   Piece("was hungry.", scored=True))
    assert example.harness == (("Anna gave the fish to Ben because Anna", " was hungry."),
                               ("Anna gave the fish to Ben because Ben", " was hungry."))


def test_winogrande_options_are_split_at_a_word_boundary():
    assert split_options("so Sam", "so Sarah") == ("so ", "Sam", "Sarah")
    # both options opening with the same word: that word is taken for prefix (docs/data.md says so)
    assert split_options("so the red car", "so the blue car") == ("so the ", "red car", "blue car")


def test_piqa_joins_labels_file():
    examples = load("piqa")
    assert [e.gold for e in examples] == [0, 1, 0]
    question = "Question: To cool a cup of tea quickly,\nAnswer: "
    assert examples[1].original[1] == (Piece(question, special_tokens=True),
                                       Piece(" add a cube of ice.", special_tokens=True, scored=True))
    assert examples[1].harness[1] == (question.rstrip(), " add a cube of ice.")


def test_siqa_labels_are_one_based():
    examples = load("siqa")
    assert [e.gold for e in examples] == [0, 1, 2]
    question = "Question: Sam gave a fish to the hungry cat. How would you describe Sam?\nAnswer: "
    assert examples[0].original[0] == (Piece(question), Piece("kind", scored=True))
    assert examples[0].harness[0] == (question.rstrip(), " kind")


def test_triviaqa_prompt_is_the_original_scripts():
    example = load("triviaqa")[1]
    assert example.prompt == "Question: What is the largest ocean on Earth??\nAnswer: "  # sic: "?" is appended
    assert example.answers == ("Pacific Ocean", "Pacific", "The Pacific")


def test_squad_reads_the_official_file_with_its_passage():
    examples = load("squad")
    assert len(examples) == 3
    assert examples[0].prompt == ("The river Nile flows north through Egypt into the Mediterranean Sea.\n"
                                  "QuesionWhich sea does the Nile flow into??\nAnswer: ")  # sic
    assert examples[0].answers == ("the Mediterranean Sea", "Mediterranean Sea", "Mediterranean")
    assert examples[2].prompt.startswith("Tom has three cats. The oldest cat is called Mia.\nQuesionWhat")


def test_malformed_squad_file_is_an_error(tmp_path):
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [{"paragraphs": [{"qas": [{"question": "q", "answers": []}]}]}]}))
    with pytest.raises(UserInputError, match="task squad: .* is not a SQuAD v1.1 file .*'context'"):
        load("squad", tmp_path)


def test_rocstories_puts_the_right_ending_in_the_suffix():
    examples = load("rocstories")
    assert examples[0].middle == "One morning, they drove him to the shelter."
    assert examples[0].suffix == "He picked a small brown puppy. Tom was very happy."
    assert examples[1].suffix.endswith("Mia was proud of her flower.")
    assert examples[0].id == "a1b2c3d4-0001-4000-8000-000000000001"


def test_gsm8k_gold_is_the_number_after_hashes():
    assert [e.gold for e in load("gsm8k")] == ["12", "3", "1000"]


def test_humaneval_reads_gzipped_and_plain_jsonl(tmp_path):
    plain = FIXTURES / "humaneval_infilling" / "HumanEval-SingleLineInfilling.jsonl"
    with plain.open("rb") as source, gzip.open(tmp_path / "HumanEval-SingleLineInfilling.jsonl.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    zipped = load("humaneval", tmp_path)
    assert zipped == load("humaneval")
    assert [e.entry_point for e in zipped] == ["add", "count_words", "largest"]
    assert zipped[0].canonical == "    total = x + y\n"


@pytest.mark.parametrize("task", sorted(REAL_COUNTS))
def test_real_file_has_the_published_record_count(task, shared_data):
    if task == "squad" and not (shared_data / "squad").is_dir():
        pytest.skip("no SQuAD file in the shared data folder")
    examples = load(task, shared_data)
    assert len(examples) == REAL_COUNTS[task]
    assert len({e.id for e in examples}) == len(examples)


@pytest.mark.parametrize("task, counts", [
    ("piqa", {0: 910, 1: 928}), ("siqa", {0: 643, 1: 654, 2: 657}), ("winogrande", {0: 628, 1: 639}),
])
def test_real_label_distribution_matches_source(task, counts, shared_data):
    assert Counter(e.gold for e in load(task, shared_data)) == counts


def test_real_lambada_first_target(shared_data):
    assert load("lambada", shared_data)[0].target == "signs"
    assert load("lambada_openai", shared_data)[0].target == "signs"


def test_missing_file_names_what_was_expected(tmp_path):
    with pytest.raises(UserInputError, match=r"task piqa: none of valid.jsonl found under .*piqa/"):
        load("piqa", tmp_path)


def test_data_dir_must_exist(tmp_path):
    with pytest.raises(UserInputError, match="is not a directory"):
        DataSource(tmp_path / "nope")


def test_misaligned_labels_are_an_error(tmp_path):
    shutil.copytree(FIXTURES / "piqa", tmp_path / "piqa")
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(UserInputError, match="2 labels for 3 records"):
        load("piqa", tmp_path)


def test_out_of_range_label_is_an_error(tmp_path):
    shutil.copytree(FIXTURES / "social_iqa", tmp_path / "social_iqa")
    (tmp_path / "social_iqa" / "dev-labels.lst").write_text("1\n2\n4\n")
    with pytest.raises(UserInputError, match=r"label '4' of record 3 .* not one of 1..3"):
        load("siqa", tmp_path)


def test_truncated_hellaswag_is_an_error(tmp_path):
    lines = (FIXTURES / "hellaswag" / "hellaswag_val_full.txt").read_text().splitlines()
    (tmp_path / "hellaswag_val_full.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UserInputError, match="17 lines; expected 6 per task"):
        load("hellaswag", tmp_path)


def test_record_missing_a_field_is_an_error(tmp_path):
    (tmp_path / "triviaqa_sm_sub.jsonl").write_text('{"context": "Question: x\\nAnswer:", "answer": "y"}\n')
    with pytest.raises(UserInputError, match="record 1 of .* lacks field.*aliases"):
        load("triviaqa", tmp_path)


def test_answer_without_final_number_is_an_error(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "no number here"}\n')
    with pytest.raises(UserInputError, match="has no '#### n' line"):
        load("gsm8k", tmp_path)


HUB_ROWS = {
    "Rowan/hellaswag": [{"activity_label": "Walking the dog", "ctx_a": "A man walks a small dog along the river.",
                         "ctx_b": "he", "endings": ["eats the moon with a blue spoon.",
                                                    "stops and lets the dog drink some water.",
                                                    "is flying over the house.", "sleeps under the green sky."],
                         "label": "1"}],
    "allenai/winogrande": [{"sentence": "Anna gave the fish to Ben because _ was hungry.", "option1": "Anna",
                            "option2": "Ben", "answer": "2"}],
    "ybisk/piqa": [{"goal": "To cool a cup of tea quickly,", "sol1": "pour it into a warm pot.",
                    "sol2": "add a cube of ice.", "label": 1}],
    "allenai/social_i_qa": [{"context": "Sam gave a fish to the hungry cat.", "question": "How would you describe Sam?",
                             "answerA": "kind", "answerB": "cruel", "answerC": "asleep", "label": "1"}],
    "mandarjoshi/trivia_qa": [{"question": "Which planet is known as the Red Planet?",
                               "answer": {"value": "Mars", "aliases": ["Mars", "Planet Mars"],
                                          "normalized_aliases": ["mars", "planet mars"]}}],
    "rajpurkar/squad": [{"id": "q1", "title": "Nile",
                         "context": "The river Nile flows north through Egypt into the Mediterranean Sea.",
                         "question": "Which sea does the Nile flow into?",
                         "answers": {"text": ["the Mediterranean Sea", "Mediterranean Sea", "Mediterranean"],
                                     "answer_start": [46, 50, 50]}}],
    "openai/gsm8k": [{"question": "Ann had 10 apples and gave away 7. How many apples does she have left?",
                      "answer": "She has 10 - 7 = <<10-7=3>>3 apples left.\n#### 3"}],
    "cimec/lambada": [{"text": "the sun is red today and the moon is blue . i do n't see a star in the sky"}],
    "EleutherAI/lambada_openai": [{"text": "The sun is red today and the moon is blue. I don't see a star in the sky"}],
}


@pytest.mark.parametrize("task, same_as", [
    ("winogrande", 2), ("piqa", 1), ("siqa", 0), ("triviaqa", 0), ("squad", 0), ("gsm8k", 1), ("lambada", 2),
    ("lambada_openai", 2),
])
def test_hub_rows_map_to_the_same_examples_as_local_files(task, same_as, monkeypatch):
    requested = []

    def fake_rows(self, name, hub):
        requested.append(hub)
        return HUB_ROWS[hub.name]

    monkeypatch.setattr(DataSource, "hub_rows", fake_rows)
    from_hub = TASKS[task].load(DataSource(None))[0]
    local = load(task)[same_as]
    assert requested and requested[0].split in ("validation", "test")
    fields = {"triviaqa": ("prompt",), "squad": ("prompt", "answers"), "gsm8k": ("question", "gold"),
              "lambada": ("context", "target"), "lambada_openai": ("context", "target")}.get(
        task, ("original", "harness", "gold"))
    assert [getattr(from_hub, f) for f in fields] == [getattr(local, f) for f in fields]


def test_hellaswag_jsonl_and_hub_rows_capitalise_ctx_b_as_the_original(tmp_path, monkeypatch):
    (tmp_path / "hellaswag_val.jsonl").write_text(json.dumps(HUB_ROWS["Rowan/hellaswag"][0]) + "\n")
    monkeypatch.setattr(DataSource, "hub_rows", lambda self, name, hub: HUB_ROWS[hub.name])
    from_hub, from_jsonl = load("hellaswag", None)[0], load("hellaswag", tmp_path)[0]
    from_text = load("hellaswag")[0]
    assert from_hub == from_jsonl
    context = "Walking the dog: A man walks a small dog along the river. He"
    assert from_hub.original[1][0] == Piece(context, special_tokens=True)
    assert from_hub.harness == tuple((context, c) for _, c in from_text.harness)  # the text file: only "he" differs


def test_unreachable_hub_is_a_one_line_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserInputError, match=r"could not load openai/gsm8k \(main\), split test from the Hub "
                                                  r"\(Couldn't reach the Hub\); pass --data_dir") as error:
        load("gsm8k", None)
    assert "\n" not in str(error.value)


def test_tasks_without_a_hub_copy_need_data_dir():
    with pytest.raises(UserInputError, match="task rocstories: .*--data_dir \\(not given\\)"):
        load("rocstories", None)
