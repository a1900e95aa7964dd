"""The counters behind rate limits and budgets, and the one atomic step that checks and
debits them for a request.

Two backends with the same semantics: `MemoryCounters` (embedded mode: one gateway process
owns the counts; each call runs without yielding to the event loop, so it is atomic) and
`RedisCounters` (one Lua script per step, so it is atomic across any number of gateway
processes). The same test suite runs against both.

- A rate window is 60 rolling buckets of window/60 seconds. A `requests` rule admits a
  request if one more fits, and debits it at once; a `tokens` rule admits while its window
  is not yet exhausted, and is debited with the real weighted tokens afterwards.
- A budget admits a request if the spend plus what is reserved by requests in flight plus
  this request's worst-case cost fits; that worst case is reserved, then replaced by the
  real cost when the request ends. Reservations expire, so a crashed request cannot hold
  budget forever.
- If any check fails, nothing is debited.
"""

import math
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from quotas import periods

BUCKETS = 60
THRESHOLDS = (50, 80, 95, 100)


@dataclass(frozen=True, slots=True)
class WindowCheck:
    key: str  # the counter: surface, counted subject, metric, window
    label: str  # e.g. user:requests/1m
    requests: bool  # False: weighted tokens
    window: int  # seconds
    limit: int

    @property
    def bucket_seconds(self) -> float:
        return self.window / BUCKETS


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    budget_id: int
    subject: str  # the counted subject, e.g. user:12
    label: str  # e.g. team:budget/monthly
    period: str
    usd: bool  # False: weighted tokens
    limit: float

    def key(self, period_key: str) -> str:
        return f"{self.budget_id}|{self.subject}|{period_key}"


@dataclass(frozen=True, slots=True)
class Cost:
    tokens: float
    usd: float

    def of(self, check: BudgetCheck) -> float:
        return self.usd if check.usd else self.tokens


@dataclass(slots=True)
class Reservation:
    id: str
    token_windows: tuple[WindowCheck, ...]
    budgets: tuple[tuple[BudgetCheck, str], ...]  # with the period key reserved in


@dataclass(slots=True)
class Verdict:
    admitted: bool
    label: str = ""  # the rule that refused
    retry_after: int = 0
    # metric -> (limit, remaining, seconds until a slot frees) of the tightest rule
    limits: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    reservation: Reservation | None = None


@dataclass(frozen=True, slots=True)
class Crossing:
    check: BudgetCheck
    period_key: str
    threshold: int
    spent: float


def _period_end(check: BudgetCheck, now: float) -> float:
    return periods.current(check.period, now)[1]


def _retry_after(buckets: dict[int, float], check: WindowCheck, current: int, now: float) -> int:
    """Seconds until enough old buckets leave the window for one more request (or, for
    a token window, until it is no longer exhausted)."""
    total = sum(buckets.values())
    need = 1 if check.requests else 0
    oldest = current - BUCKETS + 1
    for k in range(BUCKETS):
        total -= buckets.get(oldest + k, 0)
        fits = total + need <= check.limit if check.requests else total < check.limit
        if fits:
            return max(1, math.ceil((current + 1 + k) * check.bucket_seconds - now))
    return max(1, math.ceil(check.window))


def _limits(entries: list[tuple[WindowCheck, float, int]]) -> dict[str, tuple[int, int, int]]:
    """The tightest rule per metric: (limit, remaining, reset seconds)."""
    out: dict[str, tuple[int, int, int]] = {}
    for check, used, reset in entries:
        metric = "requests" if check.requests else "tokens"
        remaining = max(0, int(check.limit - used))
        if metric not in out or remaining < out[metric][1]:
            out[metric] = (check.limit, remaining, reset)
    return out


def _refused(check: WindowCheck, retry: int) -> Verdict:
    metric = "requests" if check.requests else "tokens"
    return Verdict(False, check.label, retry, {metric: (check.limit, 0, retry)})


def _crossings(check: BudgetCheck, period_key: str, before: float, after: float) -> list[int]:
    return [t for t in THRESHOLDS if before < check.limit * t / 100 <= after]


class MemoryCounters:
    def __init__(self) -> None:
        self._windows: dict[str, dict[int, float]] = {}
        self._spent: dict[str, float] = {}
        self._reserved: dict[
            str, dict[str, tuple[float, float]]
        ] = {}  # key -> id -> (amount, expires)
        self._fired: set[tuple[str, int]] = set()
        self.changed = False

    def _buckets(self, check: WindowCheck, now: float) -> tuple[dict[int, float], int]:
        current = int(now // check.bucket_seconds)
        buckets = self._windows.setdefault(check.key, {})
        oldest = current - BUCKETS + 1
        for stale in [b for b in buckets if b < oldest]:
            del buckets[stale]
        return buckets, current

    def _in_flight(self, key: str, now: float) -> float:
        held = self._reserved.get(key)
        if not held:
            return 0.0
        for rid in [r for r, (_, expires) in held.items() if expires <= now]:
            del held[rid]
        return sum(amount for amount, _ in held.values())

    async def admit(
        self,
        windows: list[WindowCheck],
        budgets: list[BudgetCheck],
        cost: Cost,
        now: float,
        hold_seconds: float,
    ) -> Verdict:
        states = []
        for check in windows:
            buckets, current = self._buckets(check, now)
            used = sum(buckets.values())
            refused = used + 1 > check.limit if check.requests else used >= check.limit
            if refused:
                return _refused(check, _retry_after(buckets, check, current, now))
            states.append((check, buckets, current, used))
        held = []
        for budget in budgets:
            period_key = periods.current(budget.period, now)[0]
            key = budget.key(period_key)
            spent, reserved = self._spent.get(key, 0.0), self._in_flight(key, now)
            amount = cost.of(budget)
            if spent >= budget.limit or spent + reserved + amount > budget.limit:
                blocked_for_good = spent + amount > budget.limit
                retry = math.ceil(_period_end(budget, now) - now) if blocked_for_good else 1
                return Verdict(False, budget.label, retry)
            held.append((budget, period_key, key, amount))
        rid = uuid.uuid4().hex
        entries = []
        for check, buckets, current, used in states:
            if check.requests:
                buckets[current] = buckets.get(current, 0) + 1
                used += 1
            entries.append((check, used, _retry_after(buckets, check, current, now)))
        for _, _, key, amount in held:
            self._reserved.setdefault(key, {})[rid] = (amount, now + hold_seconds)
        self.changed = True
        reservation = Reservation(
            rid, tuple(c for c in windows if not c.requests), tuple((b, p) for b, p, _, _ in held)
        )
        return Verdict(True, limits=_limits(entries), reservation=reservation)

    async def settle(
        self, reservation: Reservation, tokens: float, usd: float, now: float
    ) -> list[Crossing]:
        return self.settle_now(reservation, tokens, usd, now)

    def settle_now(
        self, reservation: Reservation, tokens: float, usd: float, now: float
    ) -> list[Crossing]:
        """`settle` without a coroutine: in-process counts need no I/O."""
        for check in reservation.token_windows:
            buckets, current = self._buckets(check, now)
            buckets[current] = buckets.get(current, 0) + tokens
        crossings = []
        for budget, period_key in reservation.budgets:
            key = budget.key(period_key)
            self._reserved.get(key, {}).pop(reservation.id, None)
            before = self._spent.get(key, 0.0)
            after = self._spent[key] = before + (usd if budget.usd else tokens)
            for threshold in _crossings(budget, period_key, before, after):
                if (key, threshold) not in self._fired:
                    self._fired.add((key, threshold))
                    crossings.append(Crossing(budget, period_key, threshold, after))
        self.changed = True
        return crossings

    # --- reading and adjusting, for the console and reconciliation -------------------------

    async def window_usage(self, check: WindowCheck, now: float) -> float:
        buckets, _ = self._buckets(check, now)
        return sum(buckets.values())

    async def budget_usage(self, budget: BudgetCheck, now: float) -> tuple[float, float]:
        key = budget.key(periods.current(budget.period, now)[0])
        return self._spent.get(key, 0.0), self._in_flight(key, now)

    async def raise_spend(self, budget: BudgetCheck, period_key: str, spent: float) -> None:
        """Make the period's spend at least `spent` (the database's count after a restart)."""
        key = budget.key(period_key)
        if spent > self._spent.get(key, 0.0):
            self._spent[key] = spent
            self._fired.update((key, t) for t in THRESHOLDS if spent >= budget.limit * t / 100)
            self.changed = True

    async def reset(self, subject: str) -> None:
        marker = f"|{subject}|"
        for store in (self._windows, self._spent, self._reserved):
            for key in [k for k in store if marker in f"|{k}|"]:
                del store[key]
        self._fired = {(k, t) for k, t in self._fired if marker not in f"|{k}|"}
        self.changed = True

    async def ping(self) -> None:
        return None

    def dump(self) -> dict[str, Any]:
        """The counts as JSON, for the console of an embedded installation to read."""
        return {
            "windows": {k: {str(b): n for b, n in v.items()} for k, v in self._windows.items()},
            "spent": self._spent,
            "reserved": {
                k: {r: list(v) for r, v in held.items()} for k, held in self._reserved.items()
            },
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> "MemoryCounters":
        counters = cls()
        counters._windows = {
            k: {int(b): n for b, n in v.items()} for k, v in data.get("windows", {}).items()
        }
        counters._spent = dict(data.get("spent", {}))
        counters._reserved = {
            k: {r: (v[0], v[1]) for r, v in held.items()}
            for k, held in data.get("reserved", {}).items()
        }
        return counters


# --- Redis: the same steps as Lua scripts -----------------------------------------------

# KEYS: the windows' hashes (field = bucket number), then per budget its spend hash, its
# reservations hash (id -> amount) and their expiry sorted set.
# ARGV: now, #windows, #budgets, request id, reservation expiry, key TTL for budgets, then
# per window: bucket seconds, limit, is-requests, window seconds; per budget: limit, cost.
_ADMIT = """
local now, nwin, nbud = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rid, hold_until, budget_ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local a = 7
local win = {}
for i = 1, nwin do
  local len, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local isreq, window = ARGV[a + 2] == "1", tonumber(ARGV[a + 3])
  a = a + 4
  local cur = math.floor(now / len)
  local oldest = cur - 59
  local flat = redis.call("HGETALL", KEYS[i])
  local used, counts, stale = 0, {}, {}
  for j = 1, #flat, 2 do
    local b, n = tonumber(flat[j]), tonumber(flat[j + 1])
    if b >= oldest then used = used + n; counts[b] = n else stale[#stale + 1] = flat[j] end
  end
  if #stale > 0 then redis.call("HDEL", KEYS[i], unpack(stale)) end
  local refused
  if isreq then refused = used + 1 > limit else refused = used >= limit end
  -- seconds until enough old buckets leave for one more
  local function retry(extra)
    local total = used + extra
    for k = 0, 59 do
      total = total - (counts[oldest + k] or 0)
      local fits
      if isreq then fits = total + 1 <= limit else fits = total < limit end
      if fits then return math.max(1, math.ceil((cur + 1 + k) * len - now)) end
    end
    return math.max(1, math.ceil(window))
  end
  if refused then return {0, "w", i, tostring(retry(0))} end
  win[i] = {cur = cur, isreq = isreq, window = window, used = used, retry = retry}
end
local bud = {}
for i = 1, nbud do
  local bkey, rkey, xkey = KEYS[nwin + 3 * i - 2], KEYS[nwin + 3 * i - 1], KEYS[nwin + 3 * i]
  local limit, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local expired = redis.call("ZRANGEBYSCORE", xkey, "-inf", now)
  if #expired > 0 then
    redis.call("HDEL", rkey, unpack(expired))
    redis.call("ZREM", xkey, unpack(expired))
  end
  local spent = tonumber(redis.call("HGET", bkey, "spent") or "0")
  local reserved = 0
  for _, v in ipairs(redis.call("HVALS", rkey)) do reserved = reserved + tonumber(v) end
  if spent >= limit or spent + reserved + cost > limit then
    local forgood = 0
    if spent + cost > limit then forgood = 1 end
    return {0, "b", i, tostring(forgood)}
  end
  bud[i] = {bkey = bkey, rkey = rkey, xkey = xkey, cost = cost}
end
local out = {1}
for i = 1, nwin do
  local w = win[i]
  local extra = 0
  if w.isreq then
    redis.call("HINCRBY", KEYS[i], w.cur, 1)
    redis.call("EXPIRE", KEYS[i], 2 * w.window)
    extra = 1
  end
  out[#out + 1] = tostring(w.used + extra)
  out[#out + 1] = tostring(w.retry(extra))
end
for i = 1, nbud do
  local b = bud[i]
  redis.call("HSET", b.rkey, rid, b.cost)
  redis.call("ZADD", b.xkey, hold_until, rid)
  for _, k in ipairs({b.bkey, b.rkey, b.xkey}) do redis.call("EXPIRE", k, budget_ttl) end
end
return out
"""

# KEYS: the token windows' hashes, then per budget: spend hash, reservations hash, expiry
# set, fired-thresholds set. ARGV: now, #token windows, #budgets, request id, tokens,
# usd, then per token window: bucket seconds, window seconds; per budget: limit, is-usd, TTL.
_SETTLE = """
local now, nwin, nbud = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rid, tokens, usd = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local a = 7
for i = 1, nwin do
  local len, window = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  if tokens > 0 then
    redis.call("HINCRBYFLOAT", KEYS[i], math.floor(now / len), tokens)
    redis.call("EXPIRE", KEYS[i], 2 * window)
  end
end
local out = {}
local thresholds = {50, 80, 95, 100}
for i = 1, nbud do
  local base = nwin + 4 * (i - 1)
  local bkey, rkey, xkey, fkey = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4]
  local limit, isusd, ttl = tonumber(ARGV[a]), ARGV[a + 1] == "1", tonumber(ARGV[a + 2])
  a = a + 3
  redis.call("HDEL", rkey, rid)
  redis.call("ZREM", xkey, rid)
  local before = tonumber(redis.call("HGET", bkey, "spent") or "0")
  local amount = tokens
  if isusd then amount = usd end
  local after = tonumber(redis.call("HINCRBYFLOAT", bkey, "spent", amount))
  redis.call("EXPIRE", bkey, ttl)
  for _, t in ipairs(thresholds) do
    local mark = limit * t / 100
    if before < mark and mark <= after and redis.call("SADD", fkey, t) == 1 then
      redis.call("EXPIRE", fkey, ttl)
      out[#out + 1] = i
      out[#out + 1] = t
      out[#out + 1] = tostring(after)
    end
  end
end
return out
"""


class RedisCounters:
    PREFIX = "tw:q:"

    def __init__(self, client_factory: Any) -> None:
        self._client = client_factory  # returns the redis.asyncio client of the running loop
        self._scripts: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()

    def _script(self) -> tuple[Any, Any]:
        client = self._client()
        found = self._scripts.get(client)
        if found is None:
            found = self._scripts[client] = (
                client.register_script(_ADMIT),
                client.register_script(_SETTLE),
            )
        return found

    def _window_key(self, check: WindowCheck) -> str:
        return f"{self.PREFIX}w|{check.key}"

    def _budget_keys(self, budget: BudgetCheck, period_key: str) -> tuple[str, str, str, str]:
        base = f"{self.PREFIX}b|{budget.key(period_key)}"
        return base, base + "|res", base + "|exp", base + "|fired"

    async def admit(
        self,
        windows: list[WindowCheck],
        budgets: list[BudgetCheck],
        cost: Cost,
        now: float,
        hold_seconds: float,
    ) -> Verdict:
        admit, _ = self._script()
        rid = uuid.uuid4().hex
        keys = [self._window_key(c) for c in windows]
        args: list[Any] = [now, len(windows), len(budgets), rid, now + hold_seconds, 0]
        for check in windows:
            args += [check.bucket_seconds, check.limit, 1 if check.requests else 0, check.window]
        period_keys = []
        ttl = 0
        for budget in budgets:
            period_key = periods.current(budget.period, now)[0]
            period_keys.append(period_key)
            keys += self._budget_keys(budget, period_key)[:3]
            args += [budget.limit, cost.of(budget)]
            ttl = max(ttl, int(_period_end(budget, now) - now) + 86400)
        args[5] = ttl or 86400
        result = await admit(keys=keys, args=args)
        if int(result[0]) == 0:
            kind, index = result[1], int(result[2]) - 1
            if kind in (b"w", "w"):
                return _refused(windows[index], int(result[3]))
            budget = budgets[index]
            forgood = int(result[3]) == 1
            retry = math.ceil(_period_end(budget, now) - now) if forgood else 1
            return Verdict(False, budget.label, retry)
        entries = [
            (check, float(result[1 + 2 * i]), int(float(result[2 + 2 * i])))
            for i, check in enumerate(windows)
        ]
        reservation = Reservation(
            rid,
            tuple(c for c in windows if not c.requests),
            tuple(zip(budgets, period_keys, strict=True)),
        )
        return Verdict(True, limits=_limits(entries), reservation=reservation)

    async def settle(
        self, reservation: Reservation, tokens: float, usd: float, now: float
    ) -> list[Crossing]:
        _, settle = self._script()
        keys = [self._window_key(c) for c in reservation.token_windows]
        args: list[Any] = [
            now,
            len(reservation.token_windows),
            len(reservation.budgets),
            reservation.id,
            tokens,
            usd,
        ]
        for check in reservation.token_windows:
            args += [check.bucket_seconds, check.window]
        for budget, period_key in reservation.budgets:
            keys += self._budget_keys(budget, period_key)
            args += [
                budget.limit,
                1 if budget.usd else 0,
                int(_period_end(budget, now) - now) + 86400,
            ]
        result = await settle(keys=keys, args=args)
        return [
            Crossing(
                reservation.budgets[int(result[i]) - 1][0],
                reservation.budgets[int(result[i]) - 1][1],
                int(result[i + 1]),
                float(result[i + 2]),
            )
            for i in range(0, len(result), 3)
        ]

    async def window_usage(self, check: WindowCheck, now: float) -> float:
        counts = await self._client().hgetall(self._window_key(check))
        oldest = int(now // check.bucket_seconds) - BUCKETS + 1
        return sum(float(v) for b, v in counts.items() if int(b) >= oldest)

    async def budget_usage(self, budget: BudgetCheck, now: float) -> tuple[float, float]:
        client = self._client()
        spend_key, res_key, exp_key, _ = self._budget_keys(
            budget, periods.current(budget.period, now)[0]
        )
        live = set(await client.zrangebyscore(exp_key, now, "+inf"))
        held = await client.hgetall(res_key)
        spent = await client.hget(spend_key, "spent")
        return float(spent or 0), sum(float(v) for k, v in held.items() if k in live)

    async def raise_spend(self, budget: BudgetCheck, period_key: str, spent: float) -> None:
        client = self._client()
        spend_key, _, _, fired_key = self._budget_keys(budget, period_key)
        current = float(await client.hget(spend_key, "spent") or 0)
        if spent > current:
            await client.hincrbyfloat(spend_key, "spent", spent - current)
            passed = [t for t in THRESHOLDS if spent >= budget.limit * t / 100]
            if passed:
                await client.sadd(fired_key, *passed)

    async def reset(self, subject: str) -> None:
        client = self._client()
        async for key in client.scan_iter(match=f"{self.PREFIX}*|{subject}|*", count=500):
            await client.delete(key)

    async def ping(self) -> None:
        await self._client().ping()


def now() -> float:
    return time.time()
