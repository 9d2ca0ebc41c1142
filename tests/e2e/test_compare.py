"""The AR-vs-diffusion evaluation: examples framed as the stages frame their data, exact-match scoring,
AR decoding equal to transformers' greedy search, and diffusion filling exactly the masked span."""

from __future__ import annotations

import pytest
import torch

from llamafactory.data import FramingTokens, get_template
from llamafactory.data.processors import IGNORE_INDEX, ddm_sft_batch, supervised_batch
from llamafactory.ddm import DiffusionLM, SpecialTokens
from llamafactory.model.generation import generate_continuations
from tests.e2e.conftest import pipeline_module


@pytest.fixture(scope="module")
def tiny_model(pipeline_tokenizer):
    init = pipeline_module("init_model")
    return init.pipeline_gpt2(pipeline_tokenizer, n_embd=32, n_layer=2, n_head=2, n_positions=64, seed=0).eval()


ROW = {"prompt": "reverse a b c d gives", "response": "d c b a"}


def stage_batch(tokenizer, process, **options):
    """``ROW`` as the training stages tokenise it (llamafactory.data.processors)."""
    tok = tokenizer
    framing = FramingTokens(bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id, sep=tok.sep_token_id)
    batch = {"prompt": [ROW["prompt"]], "response": [ROW["response"]], "system": [""]}
    return process(batch, tokenizer=tok, tokens=framing, cutoff_len=24, template=get_template("empty"), **options)


def test_sft_examples_match_the_ddm_sft_stage_layout(compare, pipeline_tokenizer):
    example = compare.Encoder(pipeline_tokenizer).reverse_as_sft(ROW, 24)
    stage = stage_batch(pipeline_tokenizer, ddm_sft_batch)
    assert list(example.before + example.target) == stage["input_ids"][0]
    assert len(example.before) == sum(stage["src_mask"][0])


def test_ar_sft_examples_match_the_sft_stage_layout(compare, pipeline_tokenizer):
    example = compare.Encoder(pipeline_tokenizer).reverse_as_ar_sft(ROW)
    stage = stage_batch(pipeline_tokenizer, supervised_batch, train_on_prompt=False)
    assert list(example.before + example.target) == stage["input_ids"][0]
    assert stage["labels"][0][: len(example.before)] == [IGNORE_INDEX] * len(example.before)
    assert stage["labels"][0][len(example.before) :] == list(example.target)


def test_infill_examples_are_records_between_end_of_text_tokens(compare, pipeline_tokenizer, synthetic):
    tok = pipeline_tokenizer
    record = synthetic.infill_records(1, seed=0)[0]
    example = compare.Encoder(tok).infill({"kind": record.kind, "prefix": record.prefix, "middle": record.middle,
                                           "suffix": record.suffix})
    whole = example.before + example.target + example.after
    assert whole[0] == whole[-1] == tok.eos_token_id
    assert list(whole[1:-1]) == tok(record.text, add_special_tokens=False)["input_ids"]
    assert tok.decode(example.target).strip() == record.middle


def test_exact_match_compares_answers_up_to_end_of_text(compare):
    eos = 1
    examples = [compare.Example("x", (1, 7), (5, 6)), compare.Example("x", (1, 8), (4, eos, 0, 0))]
    perfect = lambda batch: [e.target for e in batch]  # noqa: E731
    assert compare.exact_match(perfect, examples, eos, 8, "test")[0] == [True, True]
    after_eos_differs = lambda batch: [(5, 6)] if len(batch[0].target) == 2 else [(4, eos, 9, 9)]  # noqa: E731
    assert compare.exact_match(after_eos_differs, examples, eos, 8, "test")[0] == [True, True]
    wrong = lambda batch: [tuple(reversed(e.target)) for e in batch]  # noqa: E731
    assert compare.exact_match(wrong, examples, eos, 8, "test")[0] == [False, False]


def test_batches_group_equal_shapes_only(compare):
    examples = [compare.Example("x", (1,) * b, (2,) * t) for b, t in [(2, 1), (3, 1), (2, 1), (2, 2), (2, 1)]]
    batches = list(compare.groups(examples, batch_size=2))
    assert sorted(i for batch in batches for i in batch) == list(range(5))
    for batch in batches:
        assert len({(len(examples[i].before), len(examples[i].target)) for i in batch}) == 1
        assert len(batch) <= 2


def test_ar_decoding_is_the_shared_greedy_decoder_for_the_target_length(compare, tiny_model):
    prompts = torch.randint(6, 100, (3, 5), generator=torch.Generator().manual_seed(0)).tolist()
    examples = [compare.Example("x", tuple(row), (0,) * 4) for row in prompts]
    expected = generate_continuations(tiny_model, prompts, 4, pad_id=0)
    assert compare.ar_generate(tiny_model, 0)(examples) == [tuple(row) for row in expected]
    assert all(len(row) == 4 for row in expected)


def test_diffusion_fills_only_the_masked_span(compare, tiny_model, pipeline_tokenizer):
    import copy

    model = DiffusionLM(copy.deepcopy(tiny_model), SpecialTokens(mask_id=pipeline_tokenizer.mask_token_id))
    examples = [compare.Example("x", (1, 10, 11), (12, 13, 14), (15, 1)) for _ in range(2)]
    for steps in (1, None):
        spans = compare.diffusion_generate(model, steps, "confidence")(examples)
        assert all(len(span) == 3 and model.mask_id not in span for span in spans)


class _Oracle(torch.nn.Module):
    """A denoiser that always predicts one fixed gold sequence (output i -> token i + 1, as with shift)."""

    def __init__(self, gold: list[int], vocab: int, mask_id: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.gold, self.vocab, self.mask_id, self.shift = torch.tensor(gold), vocab, mask_id, True

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.vocab)
        logits[:, :-1] = 10 * torch.nn.functional.one_hot(self.gold[1:], self.vocab).float()
        return logits


def test_a_perfect_denoiser_scores_full_marks_at_every_step_count(compare):
    example = compare.Example("x", (1, 10, 11), (12, 13, 14), (15, 1))
    oracle = _Oracle(list(example.before + example.target + example.after), vocab=20, mask_id=19)
    for steps in (1, 2, None):
        hits, spans = compare.exact_match(compare.diffusion_generate(oracle, steps, "confidence"), [example] * 3, 1, 8, "t")
        assert hits == [True] * 3 and spans[0] == example.target


def test_steps_option(compare):
    assert compare.parse_steps("1,4,16,n") == [1, 4, 16, None]
    with pytest.raises(SystemExit, match="got '0'"):
        compare.parse_steps("1,0")
