"""The network backends, one module per wire format; shared error handling in :mod:`core.llm.wire`."""

from core.llm.anthropic_wire import AnthropicBackend
from core.llm.openai_wire import OpenAIChatBackend
from core.llm.wire import translate_sdk_error

__all__ = ["AnthropicBackend", "OpenAIChatBackend", "translate_sdk_error"]
