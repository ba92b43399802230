"""Rate-limit budgets shared by every worker process: GCRA in Redis, one atomic script per permit.

Owns `RedisPermitSource`, the `PermitSource` (see executor/pacing.py) whose state lives in Redis, so the
sum of what all workers send on one lane never exceeds the lane's limit. Per lane `key` there are two
budgets, requests and tokens, each one number: its theoretical arrival time TAT. With emission interval
T = 60/limit (per request, or per token) and burst tolerance tau, a cost c conforms at `now` when
max(TAT, now) + c·T − tau <= now; granting it sets TAT = max(TAT, now) + c·T. Both budgets must conform
and are then both charged — checked and written by ONE Lua script (EVALSHA), so concurrent workers
cannot both take the last permit. `now` is Redis's own clock (TIME), so workers' clocks do not matter.
As in LocalPermits, a single cost larger than the burst is let through on an idle budget
(tau = max(burst, c·T)), else it could never be granted.

Keys: `<prefix>rl:{<lane>}:req|tok` (one hash slot per lane for Redis Cluster), expiring after
`ttl_seconds` of disuse. This module never sleeps: lanes decide when to ask again.
"""

from __future__ import annotations

from typing import Any

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local wait = 0
local new = {}
for i = 1, 2 do
  local cost = tonumber(ARGV[i])
  local limit = tonumber(ARGV[i + 2])
  if limit > 0 and cost > 0 then
    local interval = 60.0 / limit
    local tau = math.max(burst, cost * interval)
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local next_tat = tat + cost * interval
    local w = next_tat - tau - now
    if w > wait then wait = w end
    new[i] = next_tat
  end
end
if wait > 0 then
  return {'0', string.format('%.6f', wait), string.format('%.6f', now)}
end
for i = 1, 2 do
  if new[i] then
    redis.call('SET', KEYS[i], string.format('%.6f', new[i]), 'EX', math.max(ttl, math.ceil(new[i] - now) + 1))
  end
end
return {'1', '0', string.format('%.6f', now)}
"""

_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = tonumber(ARGV[1])
local interval = 60.0 / tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local next_tat
if tokens < 0 then
  next_tat = math.max(now, tat + tokens * interval)
else
  next_tat = math.max(tat, now) + tokens * interval
end
redis.call('SET', KEYS[1], string.format('%.6f', next_tat), 'EX', math.max(ttl, math.ceil(next_tat - now) + 1))
return string.format('%.6f', next_tat - now)
"""


class RedisPermitSource:
    """`take` and `adjust` of the PermitSource protocol over one redis.asyncio client (shared, pooled)."""

    def __init__(self, client: Any, prefix: str = "aistats:", ttl_seconds: int = 3600) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._take = client.register_script(_TAKE)  # EVALSHA, loading the script again after a NOSCRIPT
        self._adjust = client.register_script(_ADJUST)

    def keys(self, key: str) -> tuple[str, str]:
        return f"{self.prefix}rl:{{{key}}}:req", f"{self.prefix}rl:{{{key}}}:tok"

    async def take(self, key: str, cost_requests: int, cost_tokens: int,
                   rpm: int | None, tpm: int | None, burst_seconds: float) -> float:
        """GCRA over both budgets of lane `key`: 0.0 when granted (and charged), else the seconds to wait."""
        granted, wait, _now = await self.take_at(key, cost_requests, cost_tokens, rpm, tpm, burst_seconds)
        return 0.0 if granted else wait

    async def take_at(self, key: str, cost_requests: int, cost_tokens: int, rpm: int | None, tpm: int | None,
                      burst_seconds: float) -> tuple[bool, float, float]:
        """`take`, also returning Redis's clock at the decision (tests check grants against it)."""
        if not rpm and not tpm:
            return True, 0.0, 0.0
        reply = await self._take(keys=list(self.keys(key)), args=[
            max(0, cost_requests), max(0, cost_tokens), rpm or 0, tpm or 0, max(0.0, burst_seconds),
            self.ttl_seconds])
        granted, wait, now = (v.decode() if isinstance(v, bytes) else str(v) for v in reply)
        return granted == "1", float(wait), float(now)

    async def adjust(self, key: str, tokens: int, tpm: int | None) -> None:
        """Charge (`tokens` > 0) or refund (< 0) the token budget once the real usage is known; a refund
        never moves TAT into the past (that would allow a burst beyond the tolerance)."""
        if not tpm or tokens == 0:
            return
        await self._adjust(keys=[self.keys(key)[1]], args=[tokens, tpm, self.ttl_seconds])
