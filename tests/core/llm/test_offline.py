"""Provider ``offline``: registered handlers answer deterministically per seed, validated like a reply."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from core.errors import ProviderError, StructuredOutputError
from core.llm_client import OfflineRequest, UsageLedger, make_client, register_offline_handler


class Step(BaseModel):
    param: str
    factor: float


def _pick(request: OfflineRequest) -> dict:
    params = request.context["params"]
    return {"param": request.rng.choice(params), "factor": round(request.rng.uniform(0.5, 2.0), 6)}


CONTEXT = {"params": ["LR", "WD", "BETA1", "BETA2", "WARMUP", "DEPTH"], "best": 1.23}


def _ask(seed, purpose, context=CONTEXT):
    return make_client("offline", seed=seed).structured(
        purpose=purpose, schema=Step, messages="propose", context=context
    )


def test_offline_handler_is_deterministic_per_seed(offline_purpose):
    register_offline_handler(offline_purpose, _pick)
    assert _ask(7, offline_purpose) == _ask(7, offline_purpose)
    answers = {_ask(seed, offline_purpose).model_dump_json() for seed in range(8)}
    assert len(answers) > 1


def test_offline_rng_depends_on_context(offline_purpose):
    register_offline_handler(offline_purpose, _pick)
    other = {**CONTEXT, "best": 9.99}
    draws = [(_ask(s, offline_purpose), _ask(s, offline_purpose, other)) for s in range(5)]
    assert any(a != b for a, b in draws)


def test_offline_output_is_validated_against_the_schema(offline_purpose):
    seen: list[bool] = []

    def bad(request: OfflineRequest) -> dict:
        seen.append(request.is_repair)
        return {"param": "LR"}  # no factor

    register_offline_handler(offline_purpose, bad)
    with pytest.raises(StructuredOutputError, match="factor"):
        _ask(0, offline_purpose)
    assert seen == [False, True]  # the repair round reached the handler too


def test_offline_handler_sees_a_frozen_request_with_its_inputs(offline_purpose):
    captured: list[OfflineRequest] = []

    def keep(request: OfflineRequest) -> str:
        captured.append(request)
        return "noted"

    register_offline_handler(offline_purpose, keep)
    client = make_client("offline", seed=3)
    assert client.complete(purpose=offline_purpose, messages="hi", context={"k": [1]}) == "noted"
    [req] = captured
    assert (req.purpose, req.seed, req.schema, req.messages) == (
        offline_purpose,
        3,
        None,
        ({"role": "user", "content": "hi"},),
    )
    assert req.context["k"] == [1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.seed = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        req.context["k"] = 2  # type: ignore[index]


def test_unregistered_purpose_names_it_and_lists_registered_ones(offline_purpose):
    register_offline_handler(offline_purpose, _pick)
    with pytest.raises(ProviderError, match=r"no handler for purpose 'nobody-registered-this'.*test::"):
        make_client("offline").complete(purpose="nobody-registered-this", messages="x")


def test_offline_calls_are_counted_with_zero_tokens_and_cost(offline_purpose):
    register_offline_handler(offline_purpose, _pick)
    ledger = UsageLedger()
    client = make_client("offline", level="mechanism", ledger=ledger)
    client.structured(purpose=offline_purpose, schema=Step, messages="x", context=CONTEXT)
    [record] = ledger.records
    assert (
        record.provider,
        record.level,
        record.prompt_tokens,
        record.completion_tokens,
        record.cost_usd,
    ) == ("offline", "mechanism", 0, 0, 0.0)
    assert ledger.totals().calls == 1


def test_registering_a_different_handler_for_a_taken_purpose_needs_replace(offline_purpose):
    register_offline_handler(offline_purpose, _pick)
    register_offline_handler(offline_purpose, _pick)  # same handler again is fine (re-import)
    with pytest.raises(ValueError, match="already registered"):
        register_offline_handler(offline_purpose, lambda r: "other")
    register_offline_handler(offline_purpose, lambda r: "other", replace=True)
    assert make_client("offline").complete(purpose=offline_purpose, messages="x") == "other"


def test_handler_exception_becomes_provider_error(offline_purpose):
    @register_offline_handler(offline_purpose)
    def broken(request: OfflineRequest) -> dict:
        raise KeyError("missing_field")

    with pytest.raises(ProviderError, match="raised KeyError"):
        make_client("offline").complete(purpose=offline_purpose, messages="x")
