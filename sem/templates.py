"""The chat template a served model renders SEM's prompt with: the model's own, or one from settings.

A checkpoint without a chat template (a base model, a conversion) cannot render a conversation at all; without this
check the service said it was ready and then failed every request. Now it is refused at start-up, with the fix named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sem import protocol
from sem.errors import ConfigError

log = logging.getLogger(__name__)

# What a served conversation holds at its widest: SEM's system prompt, an earlier exchange, the new question.
PROBE = [
    {"role": "user", "content": "Who wrote Hamlet?"},
    {"role": "assistant", "content": "<answer>William Shakespeare</answer>"},
]


def load_chat_template(tokenizer_path: str, template: Path | None) -> str | None:
    """Check, before an engine starts, that the model's tokenizer with `template` (when set) renders SEM's prompt.

    Returns:
        The template's text to give the engine's tokenizer, or None to keep the model's own.
    Raises:
        ConfigError: no template anywhere, an unreadable file, or a template that cannot render the probe.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except Exception as exc:  # OSError, ValueError...: the engine's own start will say it better
        log.debug("no tokenizer to check the chat template of %s: %s", tokenizer_path, exc)
        return None
    text = None
    if template is not None:
        try:
            text = template.expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"SEM_CHAT_TEMPLATE: cannot read {template}: {exc}") from exc
    use_chat_template(tokenizer, text, tokenizer_path)
    return text


def use_chat_template(tokenizer: Any, template: str | None, model: str) -> None:
    """Give `tokenizer` the chat template `template` (when set) and check that it renders SEM's prompt.

    Raises:
        ConfigError: no template anywhere, or a template that cannot render the probe.
    """
    if template is not None:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"the model {model} has no chat template (a base model or a bare conversion?): set SEM_CHAT_TEMPLATE "
            "to a Jinja chat template file (as vLLM's --chat-template), or serve a chat model"
        )
    try:
        prompt = protocol.render_prompt(tokenizer, protocol.build_messages("Who painted the Mona Lisa?", PROBE))
    except Exception as exc:  # jinja2's TemplateError, a template's own raise_exception, ...
        raise ConfigError(f"the chat template of {model} cannot render SEM's prompt: {exc}") from exc
    if "Mona Lisa" not in prompt:
        raise ConfigError(f"the chat template of {model} drops the user's question from the prompt")
