"""Lenient parsing of replies into pydantic models, and the one repair round."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from core.errors import StructuredOutputError
from core.llm.parsing import ParseFailure, extract_json_object, parse_structured, strip_thinking


class Plan(BaseModel):
    param: str
    value: float = Field(ge=0)


def test_think_blocks_are_stripped_before_parsing():
    text = '<think>maybe {"param": "wrong"} ...</think>\n{"param": "LR", "value": 0.1}'
    assert parse_structured(text, Plan) == Plan(param="LR", value=0.1)


def test_dangling_think_close_drops_the_reasoning_before_it():
    assert strip_thinking("reasoning {not json} </think> answer") == "answer"


def test_fenced_json_block_is_preferred_over_stray_braces():
    text = 'I think {this} matters.\n```json\n{"param": "WD", "value": 2}\n```\nDone {}.'
    assert extract_json_object(text) == {"param": "WD", "value": 2}


def test_first_balanced_object_is_found_in_prose_even_with_braces_in_strings():
    text = 'Sure! Here it is: {"param": "a}b{", "value": 1} and {"param": "x", "value": 2}'
    assert extract_json_object(text) == {"param": "a}b{", "value": 1}


def test_reply_without_object_is_a_parse_failure():
    with pytest.raises(ParseFailure, match="no JSON object"):
        extract_json_object("no json here")


def test_validation_error_names_the_field():
    with pytest.raises(ParseFailure, match="value"):
        parse_structured('{"param": "LR", "value": -1}', Plan)


def test_malformed_json_then_successful_repair_round(fake_server, openai_client):
    fake_server.script(
        fake_server.openai_reply('{"param": "LR", "value": oops}'),
        fake_server.openai_reply('```json\n{"param": "LR", "value": 0.5}\n```'),
    )
    client = openai_client()
    plan = client.structured(purpose="propose", schema=Plan, messages=[{"role": "user", "content": "go"}])
    assert plan == Plan(param="LR", value=0.5)
    first, repair = fake_server.requests
    assert (
        first.body["messages"][0]["role"] == "system"
        and "Plan" in first.body["messages"][0]["content"]
    )
    assert repair.body["messages"][-2] == {"role": "assistant", "content": '{"param": "LR", "value": oops}'}
    assert "could not be used" in repair.body["messages"][-1]["content"]
    assert client.ledger.totals().calls == 2


def test_repair_message_quotes_the_validation_error(fake_server, openai_client):
    fake_server.script(
        fake_server.openai_reply('{"param": "LR", "value": -3}'),
        fake_server.openai_reply('{"param": "LR", "value": 3}'),
    )
    assert openai_client().structured(purpose="p", schema=Plan, messages="go").value == 3
    assert "value" in fake_server.requests[1].body["messages"][-1]["content"]
    assert "greater than or equal" in fake_server.requests[1].body["messages"][-1]["content"]


def test_structured_output_error_after_a_failed_repair_round(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("I cannot comply."))
    with pytest.raises(StructuredOutputError, match="after one repair round"):
        openai_client().structured(purpose="propose", schema=Plan, messages="go")
    assert len(fake_server.requests) == 2


def test_think_tags_stripped_from_a_real_reply_and_from_plain_text(fake_server, openai_client):
    fake_server.script(
        fake_server.openai_reply('<think>let me see {"param": 1}</think>{"param": "B", "value": 4}'),
        fake_server.openai_reply("<think>hmm</think>\nThe answer is 4."),
    )
    client = openai_client()
    assert client.structured(purpose="p", schema=Plan, messages="go") == Plan(param="B", value=4)
    assert client.complete(purpose="q", messages="go") == "The answer is 4."
