"""The standalone trainer that adapts LLaMA-2-7B into DiffuLLaMA (accelerate + DeepSpeed ZeRO-3).

``run`` (the ``train.py`` command), ``loop`` (optimizer steps, logs, validation), ``parallel`` (data and
sequence parallelism), ``checkpointing`` (atomic, resumable training state), ``deepspeed_support``,
``throughput`` (tokens/s, MFU), ``packed_dataset`` (TinyLlama packed files) and ``prepare``
(the ``prepare_data.py`` command).
"""
