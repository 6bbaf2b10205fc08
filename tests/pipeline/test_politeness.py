"""Tests for pipeline.politeness: the adaptive token bucket, per-host concurrency caps, Retry-After and backoff."""

from __future__ import annotations

import random
import threading
import time
from email.utils import formatdate

import pytest

from pipeline.fetch import FetchPolicy
from pipeline.politeness import HostLimiter, HostLimits, backoff_delay, parse_retry_after

# ---- limiter -----------------------------------------------------------------------------------------------------

def test_token_bucket_paces_requests_at_the_rate_after_its_burst(clock) -> None:
    limiter = HostLimiter(10.0, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert limiter.acquire() == 0.0  # the burst goes at once
    for _ in range(20):
        limiter.acquire()
    assert clock.now - 1000.0 == pytest.approx(2.0)  # then one request per 1/rate seconds
    clock.now += 60  # a long pause refills only up to the burst
    for _ in range(3):
        assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(0.1)


def test_aimd_halves_the_rate_on_throttling_once_per_cooldown_and_recovers_additively(clock) -> None:
    limiter = HostLimiter(10.0, decrease=0.5, increase=0.1, cooldown=1.0, clock=clock, sleep=clock.sleep)
    limiter.throttled()
    limiter.throttled()  # the same burst of refusals: counted once
    assert limiter.rate == pytest.approx(5.0)
    clock.now += 1.0
    limiter.throttled()
    assert limiter.rate == pytest.approx(2.5)
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(1 / 2.5)  # the lower rate paces requests
    for expected in (3.5, 4.5, 5.5):
        limiter.succeeded()
        assert limiter.rate == pytest.approx(expected)  # + increase * max_rate per success
    for _ in range(20):
        limiter.succeeded()
    assert limiter.rate == 10.0  # never above the configured rate
    for _ in range(50):
        clock.now += 1.0
        limiter.throttled()
    assert limiter.rate == pytest.approx(10.0 / 50)  # floor: max_rate / 50


def test_limiter_is_thread_safe_with_the_real_clock() -> None:
    limiter = HostLimiter(100.0, burst=1)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(8)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 31 / 100 - 0.01  # 32 tokens: 1 from the bucket, 31 at 100/s


def test_host_limits_cap_concurrent_requests_per_host() -> None:
    limits = HostLimits(FetchPolicy(rate=10_000, per_host_concurrency=2))
    active, peak, lock = {"a": 0, "b": 0}, {"a": 0, "b": 0}, threading.Lock()

    def use(host: str) -> None:
        with limits.slot(host):
            with lock:
                active[host] += 1
                peak[host] = max(peak[host], active[host])
            time.sleep(0.02)
            with lock:
                active[host] -= 1

    threads = [threading.Thread(target=use, args=(host,)) for host in "ab" * 6]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == {"a": 2, "b": 2}


# ---- Retry-After and backoff ---------------------------------------------------------------------------------------

def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 120 ", now) == 120.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0  # a date in the past: go now
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00", 1445412480.0) == pytest.approx(0.0)  # no zone: GMT
    for unusable in (None, "", "soon", "-3", "1.5"):
        assert parse_retry_after(unusable, now) is None


def test_backoff_grows_exponentially_with_jitter_within_bounds() -> None:
    rng = random.Random(0)
    for retry, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (9, 5.0)):
        delays = [backoff_delay(retry, 0.5, 5.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed
