"""Serving a diffusion LM: an OpenAI-compatible HTTP API (``llamafactory-cli api``) and a terminal chat
(``llamafactory-cli chat``).

- ``protocol``: request bodies in OpenAI's shapes; ``limits``: address and limits from the environment;
- ``engine``: request fields -> jobs (rows) with the checkpoint's sampler defaults, tokens -> final text;
- ``scheduler``: continuous batching of the core reverse loop on one worker thread;
- ``app``: the HTTP translation; ``chat``: chat prompts and the terminal chat; ``launch``: the commands.
"""
