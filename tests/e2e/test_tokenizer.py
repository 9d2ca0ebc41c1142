"""The pipeline's BPE tokenizer: every special token the stages need, lossless on the corpus, and
piece-wise encoding that matches whole-text encoding (the evaluation encodes spans separately)."""

from __future__ import annotations

from llamafactory.ddm import resolve_special_tokens


def test_special_tokens_are_distinct_and_resolved_by_the_core(pipeline_tokenizer):
    """One end-of-text token serves as bos and eos (GPT-2 style); every other special token is distinct."""
    tok = pipeline_tokenizer
    assert tok.bos_token_id == tok.eos_token_id
    ids = [tok.eos_token_id, tok.pad_token_id, tok.sep_token_id, tok.mask_token_id, tok.unk_token_id]
    assert None not in ids and len(set(ids)) == len(ids)
    special = resolve_special_tokens(tok, "gpt2", len(tok))
    assert (special.mask_id, special.pad_id, special.sep_id) == (tok.mask_token_id, tok.pad_token_id, tok.sep_token_id)


def test_corpus_round_trips_without_unknown_tokens(pipeline_tokenizer, synthetic):
    for record in synthetic.corpus_records(100, seed=5):
        ids = pipeline_tokenizer(record.text, add_special_tokens=False)["input_ids"]
        assert pipeline_tokenizer.unk_token_id not in ids
        assert pipeline_tokenizer.decode(ids).strip() == record.text


def test_pieces_encode_like_the_whole_record(pipeline_tokenizer, synthetic):
    encode = lambda text: pipeline_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for record in synthetic.infill_records(30, seed=7):
        assert encode(record.prefix) + encode(record.middle) + encode(record.suffix) == encode(record.text)
