"""The one rule for comparing floats in this suite.

Results that come from *different* computations — another batch size or padding width, another number of
processes or threads, another attention kernel, a resumed run — differ in the order floating-point sums
are taken, and that order depends on the CPU (vector width, thread count). Compare them with a tolerance
that fits their dtype (``close``). Exact ``==`` is kept only where the computation is bitwise the same by
construction (the same call twice, the same shapes on the same kernels) and for integers and decisions
(chosen answers, generated token ids under greedy decoding with well-separated scores).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

# Relative / absolute tolerances per dtype for results of differently shaped float computations.
TOLERANCE = {
    torch.float32: {"rel": 1e-5, "abs": 1e-6},
    torch.float64: {"rel": 1e-10, "abs": 1e-12},
    torch.bfloat16: {"rel": 2e-2, "abs": 1e-2},
    torch.float16: {"rel": 2e-3, "abs": 1e-3},
}
# Losses and weights after a few optimiser steps of runs that differ only in summation order (N processes
# vs one accumulating process): Adam divides each gradient by its own running scale, so a last-bit
# difference in a near-zero gradient can move that weight by a visible fraction of the learning rate.
AFTER_TRAINING = {"rel": 1e-3, "abs": 1e-4}


def close(expected: Any, dtype: torch.dtype = torch.float32) -> Any:
    """``pytest.approx(expected)`` with the tolerance of ``dtype`` (nested lists, dicts and tuples work)."""
    return pytest.approx(expected, **TOLERANCE[dtype])


def assert_tensors_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
    """``torch.testing.assert_close`` with the tolerance of ``dtype``."""
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(actual, expected, rtol=tolerance["rel"], atol=tolerance["abs"])


def _split(value: Any) -> tuple[Any, Any]:
    """``(exact part, float part)`` of a JSON-like value: floats are replaced by None in the first."""
    if isinstance(value, float):
        return None, value
    if isinstance(value, dict):
        parts = {key: _split(item) for key, item in value.items()}
        return {k: p[0] for k, p in parts.items()}, {k: p[1] for k, p in parts.items()}
    if isinstance(value, (list, tuple)):
        parts = [_split(item) for item in value]
        return [p[0] for p in parts], [p[1] for p in parts]
    return value, None


def assert_records_match(actual: Any, expected: Any, dtype: torch.dtype = torch.float32) -> None:
    """JSON-like results (per-example records, metric dicts) agree: every non-float exactly (ids, chosen
    answers, generated text), every float within the tolerance of ``dtype``."""
    actual_exact, actual_floats = _split(actual)
    expected_exact, expected_floats = _split(expected)
    assert actual_exact == expected_exact
    flat_actual, flat_expected = _flatten(actual_floats), _flatten(expected_floats)
    assert flat_actual == close(flat_expected, dtype)


def _flatten(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in _flatten(value[key])]
    if isinstance(value, list):
        return [x for item in value for x in _flatten(item)]
    return [] if value is None else [value]
