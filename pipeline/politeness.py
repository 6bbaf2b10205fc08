"""How `tol download` paces itself per host: adaptive token buckets, concurrency caps, Retry-After and backoff.

    tol download demo-out/kit/eol/media_manifest.tgz demo-out/out/downloads --contact you@example.org --rate 10

Pure Python, no network. Each host gets a token bucket whose rate adapts (AIMD: multiplied by `aimd_decrease` on
429/503, raised by `aimd_increase` of the configured rate per success, never above it) and a cap of
`per_host_concurrency` requests in flight. Between attempts `pipeline.fetch` waits `backoff_delay` (exponential,
with jitter) or the server's `Retry-After` (`parse_retry_after`), whichever is longer. Clocks and sleep are
injectable so tests run on a fake clock.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: pipeline.fetch imports this module
    from pipeline.fetch import FetchPolicy

Clock = Callable[[], float]
Sleep = Callable[[float], None]

THROTTLE_STATUSES = frozenset({429, 503})  # the answers that slow a host's bucket down
TOKEN_EPSILON = 1e-9


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header, delta-seconds or an HTTP-date (`now`: epoch seconds); None if absent
    or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are always GMT
    return max(0.0, when.timestamp() - now)


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `retry` (1 = the first): uniform in [d/2, d], d = min(cap, base*2^(retry-1)).

    Half fixed, half jitter: waits still grow, and clients that failed together do not retry together.
    """
    ceiling = min(cap, base * 2.0 ** (retry - 1))
    return rng.uniform(ceiling / 2, ceiling)


class HostLimiter:
    """A token bucket for one host whose rate adapts: multiplied by `decrease` on 429/503 (at most once per
    `cooldown` seconds, so one burst of refusals counts once), raised by `increase * max_rate` per success."""

    def __init__(self, max_rate: float, burst: float = 1.0, *, decrease: float = 0.5, increase: float = 0.05,
                 min_rate: float | None = None, cooldown: float = 1.0, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        self.max_rate, self.burst, self.decrease, self.increase = max_rate, burst, decrease, increase
        self.min_rate = min_rate if min_rate is not None else max_rate / 50
        self.cooldown, self._clock, self._sleep = cooldown, clock, sleep
        self._lock = threading.Lock()
        self.rate, self.tokens, self._updated, self._last_decrease = max_rate, burst, clock(), -math.inf

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; return the seconds slept."""
        waited = 0.0
        while True:
            with self._lock:
                self._refill(self._clock())
                if self.tokens >= 1 - TOKEN_EPSILON:  # float rounding must not leave a sliver to wait for forever
                    self.tokens -= 1
                    return waited
                wait = (1 - self.tokens) / self.rate
            self._sleep(wait)  # outside the lock, so throttled()/succeeded() are never held up
            waited += wait

    def throttled(self) -> None:
        with self._lock:
            now = self._clock()
            self._refill(now)
            if now - self._last_decrease >= self.cooldown:
                self.rate = max(self.min_rate, self.rate * self.decrease)
                self._last_decrease = now

    def succeeded(self) -> None:
        with self._lock:
            self._refill(self._clock())
            self.rate = min(self.max_rate, self.rate + self.increase * self.max_rate)


class HostLimits:
    """The limiter and the concurrency cap of every host, made on first use; shared by a worker's fetch threads."""

    def __init__(self, policy: FetchPolicy, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._policy, self._clock, self._sleep = policy, clock, sleep
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[HostLimiter, threading.BoundedSemaphore]] = {}

    def _host(self, host: str) -> tuple[HostLimiter, threading.BoundedSemaphore]:
        with self._lock:
            if host not in self._hosts:
                policy = self._policy
                limiter = HostLimiter(policy.rate, policy.burst, decrease=policy.aimd_decrease,
                                      increase=policy.aimd_increase, clock=self._clock, sleep=self._sleep)
                self._hosts[host] = limiter, threading.BoundedSemaphore(policy.per_host_concurrency)
            return self._hosts[host]

    def limiter(self, host: str) -> HostLimiter:
        return self._host(host)[0]

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[HostLimiter]:
        """Hold one of the host's concurrency slots, then wait for a token: the request goes out at the token's time."""
        limiter, semaphore = self._host(host)
        with semaphore:
            limiter.acquire()
            yield limiter
