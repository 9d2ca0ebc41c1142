"""lm-evaluation-harness model ``diffllm``: any diffusion checkpoint this project loads, behind the harness API.

Importing this module registers the model. From Python::

    import lm_eval
    import dlm_eval.harness  # registers "diffllm"
    lm_eval.simple_evaluate(model="diffllm", model_args="pretrained=diffusionfamily/diffugpt-s", tasks=["piqa"])

From the shell, ``python evaluation/lm_eval_diffllm.py`` takes exactly ``lm_eval``'s arguments
(``--model diffllm --model_args pretrained=...``); lm-eval 0.4 has no plugin discovery for models,
so a plain ``lm_eval`` process would not know the name.

* ``loglikelihood``: minus the likelihood score (mean masked cross-entropy over ``diffusion_steps`` noise
  levels, estimator ``scorer``), so the harness's argmax picks the same choice as the paper's argmin;
  ``is_greedy`` says whether one greedy denoising step over the fully masked continuation reproduces it.
* ``loglikelihood_rolling``: minus the core's deterministic ELBO estimate of the text's NLL (nats).
* ``generate_until``: ``max_gen_toks`` masked positions after the context, filled by the core sampler
  with ``sampling_steps`` steps and the sampler keys of ``--model_args`` (every setting of the schema, as
  ``logits_temp``, ``topp_temp``, ``strategy``, ``block_length``, ``cache``, ... or any other spelling;
  docs/design.md#sampler-settings), cut at the first stop sequence. Each request samples from its own generator, seeded from (seed, task, document, copy).

Data parallel as lm-eval's HF model: under ``accelerate launch`` / ``torchrun`` the harness gives each
process its share of the requests (``rank``, ``world_size``), every process runs on its own device
(``cuda:LOCAL_RANK``, or the CPU), and results are gathered through a gloo group. The device is chosen as
the HF model chooses it: a ``device`` that does not exist here (lm-eval's command line passes ``cuda:0``
by default) falls back to CUDA when present, else the CPU.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import lm_eval.models  # noqa: F401  (the built-in models; the registry loads them only while it is empty)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from llamafactory.ddm import load_diffusion_lm, sequence_nll, with_start_token
from llamafactory.ddm.settings import BY_NAME, canonical
from llamafactory.entry_points import resolve_dtype
from llamafactory.errors import UserInputError
from llamafactory.sampler_flags import SCRIPT_FLAGS, parse_setting
from llamafactory.utils.distributed import Launch, all_gather_tensor, barrier, gather_to_main, init_object_group

from .diffusion_engine import DiffusionEngine
from .engine import Decoding, FillRequest
from .text import encode, encode_pair, encode_prefix, example_seed, leading_special_ids

logger = logging.getLogger(__name__)
# The harness keys of settings spelled otherwise than by name: the quick start's, and ``sampling_steps`` for
# the sampler's T (``diffusion_steps`` is the scoring T here).
MODEL_ARG_KEYS = {**SCRIPT_FLAGS, "steps": "sampling_steps"}


def harness_device(device: str | None, launch: Launch) -> torch.device:
    """The device as lm-eval's HF model picks it: this process's GPU (or the CPU) under a launcher; else
    ``device`` when it exists on this machine; else CUDA when present, else the CPU."""
    if launch.world_size > 1:
        return launch.device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if device:
        chosen = torch.device(device)
        if chosen.type != "cuda" or (torch.cuda.is_available() and (chosen.index or 0) < torch.cuda.device_count()):
            return chosen
        logger.warning("device %s is not available on this machine; using %s", device,
                       "cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def harness_decoding(sampler: dict[str, Any]) -> Decoding:
    """The sampler of ``--model_args``: a key is a setting's name, its harness key (``MODEL_ARG_KEYS``) or any
    other spelling; unset settings keep the schema defaults (the original quick-start sampler's)."""
    values = canonical(sampler, MODEL_ARG_KEYS)
    unknown = [key for key in values if key not in BY_NAME]
    if unknown:
        raise UserInputError(f"unknown diffllm model argument {unknown[0]!r}")
    decoding = Decoding(**{name: parse_setting(BY_NAME[name], value) for name, value in values.items()})
    decoding.validate()
    return decoding


def _batch_size(value: Any) -> int:
    """The harness passes ints, or strings such as ``"auto"``; anything but a positive int means 32."""
    text = str(value)
    return int(text) if text.isdigit() and int(text) > 0 else 32


@register_model("diffllm")
class DiffLLM(LM):
    """A diffusion LM (DiffuGPT, DiffuLLaMA or a checkpoint of this project's stages) for the harness.

    An unknown ``--model_args`` key is an error; ``max_batch_size`` (passed by the harness) is unused.
    """

    def __init__(self, pretrained: str, base_model: str | None = None, adapters: str | None = None,
                 dtype: str = "auto", device: str | None = None, attn_implementation: str = "sdpa",
                 batch_size: int | str = 32, diffusion_steps: int = 32, seed: int = 0, max_gen_toks: int = 128,
                 scorer: str = "original", trust_remote_code: bool = False, max_batch_size: int | None = None,
                 **sampler: Any) -> None:
        super().__init__()
        decoding = harness_decoding(sampler)
        self._launch = Launch.from_env()
        init_object_group(self._launch)
        self._rank, self._world_size = self._launch.rank, self._launch.world_size
        target = harness_device(device, self._launch)
        model, tokenizer = load_diffusion_lm(
            pretrained, base_model=base_model, adapters=[a for a in (adapters or "").split(":") if a],
            dtype=resolve_dtype(dtype, target),
            attn_implementation=attn_implementation, device=target, trust_remote_code=trust_remote_code,
        )
        self.engine = DiffusionEngine(model, tokenizer, batch_size=_batch_size(batch_size), decoding=decoding)
        self._device = target
        self.diffusion_steps, self.sampling_steps = int(diffusion_steps), decoding.steps
        self.seed, self.max_gen_toks, self.scorer = int(seed), int(max_gen_toks), scorer

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_gather_tensor(tensor, self._launch)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if dst != 0:
            raise ValueError("diffllm gathers on process 0 only")
        return gather_to_main(obj, self._launch)

    def barrier(self) -> None:
        barrier()

    def _start(self) -> list[int]:
        """The token a sequence starts with when its context is empty (shift needs one given token)."""
        tokens = self.engine.model.tokens
        start = leading_special_ids(self.engine.tokenizer)
        start = start or [i for i in (tokens.bos_id, tokens.eos_id) if i is not None][:1]
        if not start:
            raise UserInputError("an empty context needs a BOS or EOS token, and this tokenizer has neither")
        return start

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context_ids, continuation_ids = encode_pair(self.engine.tokenizer, context, continuation)
        return (context_ids or self._start()), continuation_ids

    def _prompt(self, context: str) -> list[int]:
        """A generation prompt: led by the start token, as every generation surface's (the server's included)."""
        return with_start_token(self.engine.tokenizer, encode_prefix(self.engine.tokenizer, context))

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self._pair(*request.args) for request in requests]
        scores = self.engine.score(pairs, steps=self.diffusion_steps, seed=self.seed, estimator=self.scorer,
                                   desc="loglikelihood")
        one_step = Decoding(temperature=1.0, top_p=None, strategy="topk", greedy=True)
        greedy = self.engine.fill([FillRequest(c, len(x), (), steps=1) for c, x in pairs], one_step,
                                  desc="greedy check")
        results = []
        for request, score, (_, target), guess in zip(requests, scores, pairs, greedy):
            result = (-score, guess == target)
            self.cache_hook.add_partial("loglikelihood", request.args, result)
            results.append(result)
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        window = self.engine.max_length
        results = []
        for request in tqdm(requests, desc="loglikelihood_rolling"):
            ids = self._start() + encode(self.engine.tokenizer, request.args[0])
            # Disjoint windows, each seeing the token before it as its given first token.
            chunks = [ids[max(start - 1, 0) : start + window - 1] for start in range(1, len(ids), window - 1)]
            nll = sequence_nll(self.engine.model, chunks, steps=self.diffusion_steps, seed=self.seed,
                               batch_size=self.engine.batch_size, prompt_lengths=[1] * len(chunks))
            total = -sum(value for value, _ in nll)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
            results.append(total)
        return results

    def generate_until(self, requests) -> list[str]:
        fills, stops = [], []
        copies: Counter[tuple[str, int, int]] = Counter()
        for request in requests:
            key = (str(request.task_name), int(request.doc_id), int(request.idx))
            copies[key] += 1  # a request repeated (``repeats``) samples again from another seed
            context, options = request.args
            options = dict(options or {})
            until = options.get("until") or []
            stops.append([until] if isinstance(until, str) else list(until))
            length = int(options.get("max_gen_toks", self.max_gen_toks))
            fills.append(FillRequest(self._prompt(context), length, (), steps=self.sampling_steps,
                                     seed=example_seed(self.seed, "generate_until/{}/{}/{}".format(*key),
                                                       copies[key])))
        holes = self.engine.fill(fills, self.engine.decoding, desc="generate_until")
        results = []
        for request, hole, until in zip(requests, holes, stops):
            end = next((at for at, token in enumerate(hole) if token in self.engine.eos_ids), len(hole))
            text = self.engine.tokenizer.decode(hole[:end], skip_special_tokens=True)
            cut = min([text.find(stop) for stop in until if stop and stop in text], default=len(text))
            self.cache_hook.add_partial("generate_until", request.args, text[:cut])
            results.append(text[:cut])
        return results
