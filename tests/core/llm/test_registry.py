"""Provider ids, default models, keys from the environment or a .env file, pre-flight checks."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, MissingKeyError, UnknownProviderError, UserError
from core.llm_client import PROVIDERS, ModelId, check_provider, make_client, resolve_model_id


def test_bare_provider_resolves_to_its_default_model():
    assert resolve_model_id("deepseek") == ModelId("deepseek", "deepseek-chat")
    assert str(resolve_model_id("openai")) == "openai:gpt-4o-mini"


def test_provider_and_model_given_separately_resolve_like_a_full_id():
    assert resolve_model_id("anthropic", "claude-x") == resolve_model_id("anthropic:claude-x")


def test_only_first_colon_splits_so_model_names_may_hold_colons():
    assert resolve_model_id("ollama:llama3.1:8b") == ModelId("ollama", "llama3.1:8b")
    assert resolve_model_id("openrouter:meta/llama:free").model == "meta/llama:free"


def test_model_given_twice_differently_is_a_user_error():
    with pytest.raises(UserError, match="given twice"):
        resolve_model_id("openai:gpt-4o", "gpt-4.1")


def test_every_network_provider_names_a_key_variable_and_offline_ones_need_none():
    for spec in PROVIDERS.values():
        assert (spec.key_env is not None) == spec.needs_network, spec.name
    assert {"openai", "anthropic", "deepseek", "compat", "ollama", "openrouter", "offline", "replay"} <= set(
        PROVIDERS
    )


def test_unknown_provider_suggests_the_closest_name():
    with pytest.raises(UnknownProviderError, match=r"did you mean 'deepseek'\?"):
        resolve_model_id("deepsek:chat")


def test_unknown_provider_in_three_part_id_is_reported_as_unknown():
    with pytest.raises(UnknownProviderError, match="unknown provider 'a'"):
        resolve_model_id("a:b:c")


@pytest.mark.parametrize("bad", [":x", "openai:", "  ", "", "open ai:gpt", "openai:   "])
def test_malformed_id_names_the_expected_form(bad):
    with pytest.raises(UserError, match="provider:model"):
        resolve_model_id(bad)


def test_compat_has_no_default_model_and_says_how_to_give_one():
    with pytest.raises(UserError, match="compat:MODEL"):
        resolve_model_id("compat")


def test_missing_key_error_names_the_variable_to_set():
    with pytest.raises(
        MissingKeyError, match=r"^DEEPSEEK_API_KEY is not set: export it or put it in a \.env"
    ):
        make_client("deepseek")


def test_empty_key_counts_as_missing(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "   ")
    with pytest.raises(MissingKeyError, match="OPENROUTER_API_KEY"):
        check_provider("openrouter")


def test_key_is_found_in_a_dotenv_file_upward_of_the_cwd(isolated_cwd, monkeypatch):
    (isolated_cwd / ".env").write_text("ANTHROPIC_API_KEY=sk-ant-from-dotenv\n")
    deep = isolated_cwd / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert check_provider("anthropic") == ModelId("anthropic", "claude-sonnet-4-6")
    client = make_client("anthropic")
    client.close()


def test_dotenv_values_are_not_exported_to_the_environment(isolated_cwd):
    import os

    (isolated_cwd / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\n")
    check_provider("openai")
    assert "OPENAI_API_KEY" not in os.environ


def test_environment_value_wins_over_dotenv(isolated_cwd, monkeypatch):
    from core.llm.registry import read_setting

    (isolated_cwd / ".env").write_text("DEEPSEEK_API_KEY=from-file\n")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "from-env")
    assert read_setting("DEEPSEEK_API_KEY") == "from-env"


def test_compat_without_base_url_names_the_variable():
    with pytest.raises(ConfigError, match="OPENAI_COMPAT_BASE_URL"):
        check_provider("compat:my-model")


def test_compat_and_ollama_need_no_key(monkeypatch):
    assert check_provider("ollama") == ModelId("ollama", "llama3.1")
    monkeypatch.setenv("OPENAI_COMPAT_BASE_URL", "http://127.0.0.1:9/v1")
    assert check_provider("compat", "qwen") == ModelId("compat", "qwen")


def test_check_provider_constructs_no_sdk_client(monkeypatch):
    import anthropic
    import openai

    def refuse(*args, **kwargs):
        raise AssertionError("check_provider must not construct an SDK client")

    monkeypatch.setattr(openai, "OpenAI", refuse)
    monkeypatch.setattr(anthropic, "Anthropic", refuse)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    check_provider("openai")
    check_provider("anthropic", "claude-x")
    check_provider("offline")


def test_replay_needs_an_existing_cassette(tmp_path):
    with pytest.raises(UserError, match="replay:PATH"):
        check_provider("replay")
    with pytest.raises(UserError, match="cassette not found"):
        check_provider("replay", cassette=tmp_path / "missing.jsonl")


def test_cassette_option_is_refused_for_other_providers(tmp_path):
    with pytest.raises(UserError, match="only read by provider 'replay'"):
        check_provider("offline", cassette=tmp_path / "c.jsonl")
