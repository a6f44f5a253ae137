"""Internals of the LLM client; import the public API from :mod:`core.llm_client`.

One module per concept: ``registry`` (provider ids, keys), ``base`` (the wire-neutral request and
reply a backend exchanges), ``backends`` (the openai and anthropic SDKs: ``openai_wire``, ``anthropic_wire``, shared error
handling in ``wire``), ``retry`` (backoff
policy), ``parsing`` (structured output), ``usage`` (prices, ledger, budget), ``cassette``
(record / replay) and ``offline`` (the seeded stand-in researcher), tied together by ``client``.
"""
