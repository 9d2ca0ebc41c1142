"""Prompt templates for the supervised stages: how a prompt (and optional system text) is written out.

``empty`` leaves the prompt as it is (the diffusion fine-tuning recipes use it); the chat templates wrap it
in the markers their base models were tuned with.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserInputError


@dataclass(frozen=True)
class Template:
    """``layout`` holds ``{system}`` and ``{prompt}``; ``system_format`` wraps a non-empty system text."""

    name: str
    layout: str
    system_format: str = "{system}\n"
    default_system: str = ""

    def render(self, prompt: str, system: str | None = None) -> str:
        system = system or self.default_system
        wrapped = self.system_format.format(system=system) if system else ""
        return self.layout.format(system=wrapped, prompt=prompt)


TEMPLATES: dict[str, Template] = {
    "empty": Template("empty", "{system}{prompt}"),
    "alpaca": Template(
        "alpaca",
        "{system}### Instruction:\n{prompt}\n\n### Response:\n",
        system_format="{system}\n\n",
        default_system=(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        ),
    ),
    "llama2": Template("llama2", "[INST] {system}{prompt} [/INST]", system_format="<<SYS>>\n{system}\n<</SYS>>\n\n"),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise UserInputError(f"unknown template '{name}'; expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
