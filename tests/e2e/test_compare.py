"""The AR-vs-diffusion evaluation: spans framed as the stages frame their data, exact-match scoring,
AR decoding equal to the shared greedy decoder, and diffusion filling exactly the masked span, all through
dlm_eval's engines."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config

from dlm_eval import AutoregressiveEngine, DiffusionEngine
from dlm_eval.spans import Span, exact_matches, fill_spans, parse_steps
from llamafactory.data import get_template
from llamafactory.data.processors import IGNORE_INDEX, ddm_sft_batch, supervised_batch
from llamafactory.ddm import DiffusionLM, FramingTokens, SpecialTokens, generate_continuations
from llamafactory.errors import UserInputError
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


def test_exact_match_compares_answers_up_to_end_of_text():
    eos = 1
    spans = [Span("x", (1, 7), (5, 6)), Span("x", (1, 8), (4, eos, 0, 0))]
    assert exact_matches([s.target for s in spans], spans, eos) == [True, True]
    assert exact_matches([(5, 6), (4, eos, 9, 9)], spans, eos) == [True, True]
    assert exact_matches([tuple(reversed(s.target)) for s in spans], spans, eos) == [False, False]


def test_ar_spans_are_the_shared_greedy_decoder_for_the_target_length(compare, tiny_model, pipeline_tokenizer):
    prompts = torch.randint(6, 100, (3, 5), generator=torch.Generator().manual_seed(0)).tolist()
    prompts[2] = prompts[2][:3]  # a shorter prompt shares the batch (left padding)
    spans = [Span("x", tuple(row), (0,) * 4, (7, 7)) for row in prompts]
    engine = AutoregressiveEngine(tiny_model, pipeline_tokenizer, full_length=True)
    filled = fill_spans(engine, spans, compare.greedy("confidence"), steps=None, desc="t")
    assert filled == [tuple(generate_continuations(tiny_model, [row], 4, pad_id=0)[0]) for row in prompts]
    assert all(len(row) == 4 for row in filled)


def test_diffusion_fills_only_the_masked_span(compare, tiny_model, pipeline_tokenizer):
    import copy

    model = DiffusionLM(copy.deepcopy(tiny_model), SpecialTokens(mask_id=pipeline_tokenizer.mask_token_id))
    engine = DiffusionEngine(model, pipeline_tokenizer)
    spans = [Span("x", (1, 10, 11), (12, 13, 14), (15, 1)), Span("x", (1, 10), (12, 13, 14, 9), (1,))]
    for steps in (1, None):
        filled = fill_spans(engine, spans, compare.greedy("confidence"), steps=steps, desc="t")
        assert [len(span) for span in filled] == [3, 4] and all(model.mask_id not in span for span in filled)


class _Oracle(torch.nn.Module):
    """A denoiser that always predicts one fixed gold sequence (output i -> token i + 1, as with shift)."""

    def __init__(self, gold: list[int], vocab: int, mask_id: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.gold, self.vocab, self.mask_id, self.shift = torch.tensor(gold), vocab, mask_id, True
        self.config = GPT2Config(n_positions=32)
        self.tokens = SpecialTokens(mask_id=mask_id, eos_id=1)

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.vocab)
        logits[:, :-1] = 10 * torch.nn.functional.one_hot(self.gold[1:], self.vocab).float()
        return logits


def test_a_perfect_denoiser_scores_full_marks_at_every_step_count(compare):
    span = Span("x", (1, 10, 11), (12, 13, 14), (15, 1))
    oracle = _Oracle(list(span.before + span.target + span.after), vocab=20, mask_id=19)
    engine = DiffusionEngine(oracle, None)
    for steps in (1, 2, None):
        filled = fill_spans(engine, [span] * 3, compare.greedy("confidence"), steps=steps, desc="t")
        assert exact_matches(filled, [span] * 3, 1) == [True] * 3 and filled[0] == span.target


def test_steps_option():
    assert parse_steps("1,4,16,n") == [1, 4, 16, None]
    with pytest.raises(UserInputError, match="got '0'"):
        parse_steps("1,0")
