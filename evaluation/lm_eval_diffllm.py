r"""lm-evaluation-harness with the diffusion model ``diffllm`` registered; takes ``lm_eval``'s arguments.

    python evaluation/lm_eval_diffllm.py --model diffllm \
        --model_args pretrained=diffusionfamily/diffugpt-s,diffusion_steps=32 --tasks piqa,hellaswag

lm-eval 0.4 finds models only in its own registry, so the model must be registered in the same
process; this script does that and then runs the harness's own command line.
"""

from lm_eval.__main__ import cli_evaluate

import dlm_eval.harness  # noqa: F401  (registers "diffllm")

if __name__ == "__main__":
    cli_evaluate()
