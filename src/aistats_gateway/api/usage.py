"""`GET /v1/usage`: the caller's spend, requests and tokens per day and model (the dashboard's overview).

Query: `days` (1..366, default 30: the last N local days, today included), `tz_offset_minutes` (minutes
east of UTC that define "a day", default 0), `session_id` (only that session's batches). Answers
`{object:"usage", dates[], models[], totals{}, batches_by_status{}, data:[{date, model, provider,
requests, succeeded, failed, input_tokens, output_tokens, total_tokens, cost_nanos, cost_usd}]}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from aistats_gateway.api.deps import Workspace, gateway
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.services.usage import usage

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get("/usage")
async def get_usage(
    request: Request,
    workspace: Workspace,
    days: int = Query(30),
    tz_offset_minutes: int = Query(0),
    session_id: str | None = None,
) -> JSONResponse:
    gw = gateway(request)
    result = await usage(gw.store.request_log, workspace, now=gw.batches.clock.now(), days=days,
                         offset_minutes=tz_offset_minutes, session_id=session_id or None)
    return JSONResponse(result.wire(workspace, session_id or None))
