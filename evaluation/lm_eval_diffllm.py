r"""lm-evaluation-harness with the diffusion model ``diffllm`` registered; takes ``lm_eval``'s arguments.

    python evaluation/lm_eval_diffllm.py --model diffllm \
        --model_args pretrained=diffusionfamily/diffugpt-s,diffusion_steps=32 --tasks piqa,hellaswag

lm-eval 0.4 finds models only in its own registry, so the model must be registered in the same
process; this script does that and then runs the harness's own command line. Data parallel:
``accelerate launch --num_processes N evaluation/lm_eval_diffllm.py ...`` (or ``torchrun``).
"""

from lm_eval.__main__ import cli_evaluate

import dlm_eval.harness  # noqa: F401  (registers "diffllm")
from llamafactory.utils.distributed import close_process_group

if __name__ == "__main__":
    cli_evaluate()
    close_process_group(synchronize=True)
