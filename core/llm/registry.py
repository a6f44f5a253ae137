"""Provider registry: ``provider:model`` ids, default models, keys and base URLs.

A provider supplies an authenticated endpoint; its ``wire`` names the format it speaks. Everything
here is pure lookup — no SDK is imported — so a CLI can validate its arguments before doing work
(:func:`check_provider`).

Keys and base URLs come from the process environment first, then from a ``.env`` file found by
walking up from the *current working directory* (never from this package's directory). The
``.env`` values are read, not exported: they do not leak into child processes. A base URL set
there (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``...) is honoured exactly like the key beside it,
so a key is never sent to a public endpoint when another one is configured.

Each model gets :class:`ModelTraits` — how it takes structured output, whether replies are
streamed, its request timeout, which token-limit parameter it takes — from its provider's defaults,
refined per model by :data:`MODEL_RULES`, then by the settings ``BILEVEL_REQUEST_TIMEOUT``,
``BILEVEL_STRUCTURED_OUTPUT`` and ``BILEVEL_STREAM`` (environment or ``.env``), then by explicit
arguments (:func:`resolve_traits`).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values, find_dotenv

from core.errors import ConfigError, MissingKeyError, UnknownProviderError, UserError

Wire = Literal["openai", "anthropic", "offline", "replay"]
StructuredMode = Literal["json_schema", "grammar", "json_object", "tool", "prompt"]
STRUCTURED_MODES: dict[str, str] = {
    "json_schema": "OpenAI response_format json_schema; the API shows the schema to the model",
    "grammar": "response_format json_schema as a decoding grammar (Ollama, llama.cpp, vLLM), "
    "schema also in the prompt",
    "json_object": "response_format json_object (JSON mode), schema in the prompt",
    "tool": "Anthropic tool use: one forced tool whose input schema is the answer's",
    "prompt": "schema in the prompt only; the reply is parsed leniently",
}
TokenParam = Literal["max_tokens", "max_completion_tokens"]

SETTING_TIMEOUT = "BILEVEL_REQUEST_TIMEOUT"
SETTING_STRUCTURED = "BILEVEL_STRUCTURED_OUTPUT"
SETTING_STREAM = "BILEVEL_STREAM"


@dataclass(frozen=True, kw_only=True)
class ModelTraits:
    """How to talk to one model. ``timeout_s`` bounds a non-streamed reply as a whole and a
    streamed one per chunk, so a slow but live stream is never cut."""

    structured: StructuredMode = "prompt"
    token_param: TokenParam = "max_tokens"
    stream: bool = False
    timeout_s: float = 120.0
    reasoning: bool = False

ID_FORM = "expected 'provider:model' (e.g. 'openai:gpt-4o-mini') or a bare provider name (e.g. 'deepseek')"


@dataclass(frozen=True, kw_only=True)
class ProviderSpec:
    """How to reach one provider. ``key_env`` is read when set; ``key_required`` says whether a
    missing key is an error (local OpenAI-compatible servers need none)."""

    name: str
    wire: Wire
    default_model: str | None
    key_env: str | None = None
    key_required: bool = False
    base_url: str | None = None
    base_url_env: str | None = None
    base_url_required: bool = False
    traits: ModelTraits = ModelTraits()
    description: str = ""

    @property
    def needs_network(self) -> bool:
        return self.wire in ("openai", "anthropic")


# A local server (CPU, one slot) may take minutes before its first token: stream, wait long, and
# constrain decoding with the schema as a grammar.
LOCAL_TRAITS = ModelTraits(structured="grammar", stream=True, timeout_s=900.0)

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            name="openai",
            wire="openai",
            default_model="gpt-4o-mini",
            key_env="OPENAI_API_KEY",
            key_required=True,
            base_url_env="OPENAI_BASE_URL",
            traits=ModelTraits(structured="json_schema"),
            description="OpenAI API (base URL: the SDK default, or OPENAI_BASE_URL)",
        ),
        ProviderSpec(
            name="anthropic",
            wire="anthropic",
            default_model="claude-sonnet-4-6",  # 4-5 reaches end of life on 2026-11-30
            key_env="ANTHROPIC_API_KEY",
            key_required=True,
            base_url_env="ANTHROPIC_BASE_URL",
            traits=ModelTraits(structured="tool"),
            description="Anthropic Messages API through the native SDK (base URL: ANTHROPIC_BASE_URL)",
        ),
        ProviderSpec(
            name="deepseek",
            wire="openai",
            default_model="deepseek-chat",
            key_env="DEEPSEEK_API_KEY",
            key_required=True,
            base_url="https://api.deepseek.com",
            base_url_env="DEEPSEEK_BASE_URL",
            traits=ModelTraits(structured="json_object"),
            description="DeepSeek (OpenAI-compatible)",
        ),
        ProviderSpec(
            name="openrouter",
            wire="openai",
            default_model="openai/gpt-4o-mini",
            key_env="OPENROUTER_API_KEY",
            key_required=True,
            base_url="https://openrouter.ai/api/v1",
            base_url_env="OPENROUTER_BASE_URL",
            traits=ModelTraits(structured="json_schema"),
            description="OpenRouter (OpenAI-compatible)",
        ),
        ProviderSpec(
            name="compat",
            wire="openai",
            default_model=None,
            key_env="OPENAI_COMPAT_API_KEY",
            base_url_env="OPENAI_COMPAT_BASE_URL",
            base_url_required=True,
            traits=LOCAL_TRAITS,
            description="any OpenAI-compatible server (vLLM, llama.cpp, LM Studio...); "
            "base URL from OPENAI_COMPAT_BASE_URL, key optional",
        ),
        ProviderSpec(
            name="ollama",
            wire="openai",
            default_model="llama3.1",
            key_env="OPENAI_COMPAT_API_KEY",
            base_url_env="OPENAI_COMPAT_BASE_URL",
            base_url="http://localhost:11434/v1",
            traits=LOCAL_TRAITS,
            description="a local Ollama server (compat with a default base URL)",
        ),
        ProviderSpec(
            name="offline",
            wire="offline",
            default_model="stand-in",
            description="deterministic seeded stand-in researcher; NOT an LLM, no network",
        ),
        ProviderSpec(
            name="replay",
            wire="replay",
            default_model=None,
            description="answers from a recorded cassette (replay:PATH); no network",
        ),
    )
}


# (providers, model-name pattern, trait overrides), applied in order over the provider's defaults.
MODEL_RULES: tuple[tuple[frozenset[str], re.Pattern[str], dict[str, object]], ...] = (
    # OpenAI reasoning models take max_completion_tokens (max_tokens is refused) and think first.
    (frozenset({"openai", "openrouter"}), re.compile(r"^(openai/)?(o\d|gpt-([5-9]|\d\d))"),
     {"token_param": "max_completion_tokens", "reasoning": True, "timeout_s": 600.0}),
    # deepseek-reasoner returns its reasoning in a separate field and takes no JSON mode.
    (frozenset({"deepseek"}), re.compile(r"reasoner"),
     {"structured": "prompt", "reasoning": True, "timeout_s": 600.0, "stream": True}),
    (frozenset({"anthropic"}), re.compile(r"opus"), {"timeout_s": 300.0}),
)


def model_traits(provider: str, model: str) -> ModelTraits:
    """A model's defaults: its provider's traits refined by :data:`MODEL_RULES`."""
    traits = PROVIDERS[provider].traits
    for providers, pattern, overrides in MODEL_RULES:
        if provider in providers and pattern.search(model):
            traits = replace(traits, **overrides)  # type: ignore[arg-type]
    return traits


def resolve_traits(
    provider: str,
    model: str,
    *,
    timeout_s: float | None = None,
    structured_output: str | None = None,
    stream: bool | None = None,
) -> ModelTraits:
    """A model's traits after the settings (environment / ``.env``) and explicit arguments, which
    win. Invalid values raise :class:`~core.errors.ConfigError` naming where they came from."""
    traits = model_traits(provider, model)
    timeout = timeout_s if timeout_s is not None else _float_setting(SETTING_TIMEOUT)
    if timeout is not None:
        if not timeout > 0:
            raise ConfigError(f"request timeout must be > 0 seconds, got {timeout}")
        traits = replace(traits, timeout_s=float(timeout))
    mode = structured_output or read_setting(SETTING_STRUCTURED)
    if mode is not None:
        if mode not in STRUCTURED_MODES:
            raise ConfigError(
                f"structured output mode {mode!r} is unknown; use one of {', '.join(STRUCTURED_MODES)}"
            )
        traits = replace(traits, structured=mode)  # type: ignore[arg-type]
    streamed = stream if stream is not None else _bool_setting(SETTING_STREAM)
    if streamed is not None:
        traits = replace(traits, stream=streamed)
    return traits


def _float_setting(name: str) -> float | None:
    raw = read_setting(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None


def _bool_setting(name: str) -> bool | None:
    raw = read_setting(name)
    if raw is None:
        return None
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")


@dataclass(frozen=True)
class ModelId:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def spec(self) -> ProviderSpec:
        return PROVIDERS[self.provider]


def resolve_model_id(provider: str, model: str | None = None) -> ModelId:
    """Resolve ``"provider:model"``, a bare ``"provider"`` (its default model), or a provider and a
    model given separately (as ``--provider`` / ``--model`` on a CLI) into a :class:`ModelId`.

    Only the first ``:`` separates provider from model, so ``ollama:llama3.1:8b`` and
    ``openrouter:meta-llama/llama-3.1-8b-instruct:free`` work.
    """
    if not isinstance(provider, str) or not provider.strip():
        raise UserError(f"empty model id: {ID_FORM}")
    text = provider.strip()
    name, sep, given = text.partition(":")
    name = name.strip().lower()
    if sep and (not name or not given.strip()):
        raise UserError(f"malformed model id {text!r}: {ID_FORM}")
    if any(ch.isspace() for ch in name):
        raise UserError(f"malformed model id {text!r}: {ID_FORM}")
    embedded = given.strip() if sep else None
    if model is not None and not model.strip():
        raise UserError(f"empty model name for provider {name!r}: {ID_FORM}")
    explicit = model.strip() if model is not None else None
    if embedded is not None and explicit is not None and embedded != explicit:
        raise UserError(f"model given twice and they differ: {text!r} and model {explicit!r}; give it once")
    spec = _spec(name)
    chosen = embedded or explicit or spec.default_model
    if chosen is None:
        what = "a cassette path: replay:PATH" if spec.wire == "replay" else f"a model: {name}:MODEL"
        raise UserError(f"provider {name!r} has no default model; give {what}")
    return ModelId(name, chosen)


def resolve_with_cassette(
    provider: str, model: str | None, cassette: str | os.PathLike[str] | None
) -> ModelId:
    """:func:`resolve_model_id`, where a ``cassette`` option stands for the model of ``replay``."""
    if cassette is not None:
        name = provider.strip().partition(":")[0].strip().lower() if isinstance(provider, str) else ""
        if name != "replay":
            raise UserError(f"a cassette is only read by provider 'replay', not {provider!r}")
        model = model or os.fspath(cassette)
    return resolve_model_id(provider, model)


def _spec(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(PROVIDERS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(PROVIDERS))
        raise UnknownProviderError(f"unknown provider {name!r}{hint} (known: {known})") from None


def read_setting(name: str) -> str | None:
    """A non-empty value of ``name`` from the environment, else from the nearest ``.env`` upward
    of the current working directory, else ``None``."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    path = find_dotenv(usecwd=True)
    if path:
        found = (dotenv_values(path).get(name) or "").strip()
        if found:
            return found
    return None


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """What a network backend needs: the resolved base URL and key (``None`` = SDK default/none)."""

    base_url: str | None
    api_key: str | None
    key_env: str | None


def resolve_endpoint(
    model_id: ModelId, *, base_url: str | None = None, api_key: str | None = None
) -> Endpoint:
    """Find the base URL and key of a network provider, raising the user errors a CLI shows."""
    spec = model_id.spec
    url = base_url or (read_setting(spec.base_url_env) if spec.base_url_env else None) or spec.base_url
    if spec.base_url_required and not url:
        raise ConfigError(
            f"{spec.base_url_env} is not set: provider {spec.name!r} needs the server's base URL "
            f"(e.g. http://localhost:8000/v1); export it or put it in a .env file"
        )
    key = api_key or (read_setting(spec.key_env) if spec.key_env else None)
    if spec.key_required and not key:
        raise MissingKeyError(
            f"{spec.key_env} is not set: export it or put it in a .env file "
            f"(searched upward from {Path.cwd()}) to use provider {spec.name!r}"
        )
    return Endpoint(base_url=url, api_key=key, key_env=spec.key_env)


def check_provider(
    provider: str,
    model: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    cassette: str | os.PathLike[str] | None = None,
) -> ModelId:
    """CLI pre-flight: resolve the id and check keys, base URL or cassette, constructing nothing.

    Raises the same :class:`~core.errors.UserError` subclasses :func:`make_client` would.
    """
    model_id = resolve_with_cassette(provider, model, cassette)
    if model_id.spec.needs_network:
        resolve_endpoint(model_id, base_url=base_url, api_key=api_key)
    elif model_id.spec.wire == "replay":
        path = Path(model_id.model)
        if not path.is_file():
            raise UserError(f"replay cassette not found: {path}")
    return model_id
