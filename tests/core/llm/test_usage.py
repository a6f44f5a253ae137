"""Ledger totals per call, level and run; the sink and resume; the budget cap; backoff delays."""

from __future__ import annotations

import pytest

from core.errors import BudgetExceeded, ProviderError
from core.llm_client import (
    Budget,
    PriceTable,
    RetryPolicy,
    UsageLedger,
    make_client,
    register_offline_handler,
)


def test_ledger_totals_per_level_and_run_across_clients(offline_purpose):
    register_offline_handler(offline_purpose, lambda r: "ok")
    ledger = UsageLedger()
    inner = make_client("offline", level="inner", ledger=ledger)
    outer = make_client("offline", level="outer", ledger=ledger)
    for _ in range(3):
        inner.complete(purpose=offline_purpose, messages="x")
    outer.complete(purpose=offline_purpose, messages="y")
    assert ledger.totals().calls == 4
    assert {level: t.calls for level, t in ledger.by_level().items()} == {"inner": 3, "outer": 1}
    assert ledger.totals("judge").calls == 0


def test_sink_receives_one_dict_per_call_and_ledger_rebuilds_from_them(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("a", prompt_tokens=1000, completion_tokens=100))
    journal: list[dict] = []
    ledger = UsageLedger(sink=journal.append)
    client = openai_client(ledger=ledger, level="outer")
    client.complete(purpose="analyze", messages="x")
    client.complete(purpose="analyze", messages="y")
    assert len(journal) == 2
    assert journal[0]["level"] == "outer" and journal[0]["purpose"] == "analyze"
    assert journal[0]["cost_usd"] == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)

    enveloped = [{**entry, "event": "llm_call"} for entry in journal]  # a journal's own keys are ignored
    rebuilt = UsageLedger.from_records(enveloped, sink=journal.append)
    assert rebuilt.totals() == ledger.totals()
    assert rebuilt.by_level() == ledger.by_level()
    assert len(journal) == 2  # rebuilding does not re-journal


def test_budget_max_calls_stops_before_the_call(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("ok"))
    client = openai_client(budget=Budget(max_calls=2))
    client.complete(purpose="p", messages="1")
    client.complete(purpose="p", messages="2")
    with pytest.raises(BudgetExceeded, match="max_calls=2"):
        client.complete(purpose="p", messages="3")
    assert len(fake_server.requests) == 2


def test_budget_is_shared_by_every_client_of_the_ledger(offline_purpose):
    register_offline_handler(offline_purpose, lambda r: "ok")
    ledger, budget = UsageLedger(), Budget(max_calls=1)
    make_client("offline", level="inner", ledger=ledger, budget=budget).complete(
        purpose=offline_purpose, messages="x"
    )
    with pytest.raises(BudgetExceeded):
        make_client("offline", level="outer", ledger=ledger, budget=budget).complete(
            purpose=offline_purpose, messages="x"
        )


def test_budget_max_cost_stops_once_spent(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("ok", prompt_tokens=1_000_000, completion_tokens=0))
    client = openai_client(budget=Budget(max_cost_usd=0.10))  # one call costs $0.15
    client.complete(purpose="p", messages="1")
    with pytest.raises(BudgetExceeded, match="cost budget"):
        client.complete(purpose="p", messages="2")
    assert len(fake_server.requests) == 1


def test_cost_cap_does_not_stop_free_offline_calls(offline_purpose):
    register_offline_handler(offline_purpose, lambda r: "ok")
    client = make_client("offline", budget=Budget(max_cost_usd=0.0, max_calls=2))
    client.complete(purpose=offline_purpose, messages="1")
    client.complete(purpose=offline_purpose, messages="2")
    with pytest.raises(BudgetExceeded, match="max_calls=2"):
        client.complete(purpose=offline_purpose, messages="3")


def test_failed_call_is_not_counted_against_the_budget(fake_server, openai_client):
    fake_server.script(fake_server.error_reply(400, "bad"), fake_server.openai_reply("ok"))
    client = openai_client(budget=Budget(max_calls=1))
    with pytest.raises(ProviderError, match="HTTP 400"):
        client.complete(purpose="p", messages="1")
    assert client.complete(purpose="p", messages="2") == "ok"


def test_price_table_prefers_full_id_then_model_name():
    table = PriceTable({"gpt-x": (1.0, 2.0), "openrouter:gpt-x": (3.0, 4.0)}, include_defaults=False)
    assert table.cost("openai", "gpt-x", 1_000_000, 0) == pytest.approx(1.0)
    assert table.cost("openrouter", "gpt-x", 0, 1_000_000) == pytest.approx(4.0)
    assert table.cost("openai", "unknown", 10, 10) == 0.0


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, max_retry_after_s=60)
    for index, full in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        assert 0.5 * full <= policy.delay(index, None) <= full
    assert policy.delay(0, 7.0) == 7.0
    assert policy.delay(0, 600.0) is None
