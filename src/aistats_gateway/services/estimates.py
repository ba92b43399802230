"""Reading an input file before a batch exists: the upper-bound cost for a credit hold, and dry runs.

Streams the file through the same validator the executor's ingest uses, pricing each valid line with
the conservative estimator; a dry run also collects the pricing lines the batch would produce at its
estimated input and full output caps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aistats_gateway.domain.jsonl import LineSplitter, LineValidator
from aistats_gateway.pricing.calculator import PricingLines
from aistats_gateway.pricing.pricer import Pricer
from aistats_gateway.providers.routing import Router


async def scan(
    chunks: AsyncIterator[bytes], *, endpoint: str, router: Router, prefs: dict[str, Any] | None,
    pricer: Pricer, max_lines: int, max_errors: int, expected: PricingLines | None = None,
) -> LineValidator:
    def estimate(provider: str, model: str, body: dict[str, Any]) -> int:
        if expected is not None:
            for row in pricer.expected_rows(provider, model, endpoint, body):
                expected.add_row(row)
        return pricer.estimate(provider, model, endpoint, body)

    validator = LineValidator(endpoint=endpoint, route=lambda model: router.route(model, prefs), estimate=estimate,
                              max_lines=max_lines, max_errors=max_errors)
    splitter = LineSplitter()
    async for chunk in chunks:
        for line_no, raw in splitter.feed(chunk):
            validator.feed(line_no, raw)
    for line_no, raw in splitter.finish():
        validator.feed(line_no, raw)
    validator.finish()
    return validator
