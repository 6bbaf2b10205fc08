"""Fixtures for the pipeline tests: a fake monotonic clock for code that paces itself."""

from __future__ import annotations

import pytest


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock at 1000.0 s; pass `clock` as the clock and `clock.sleep` as the sleep."""
    return FakeClock()
