"""Validated argparse types whose errors name the bad value and what is allowed."""

import argparse
import math
from urllib.parse import urlsplit


def int_at_least(minimum: int):
    """An argparse type accepting integers >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def number_in(low: float, high: float, unit: str):
    """An argparse type accepting numbers from `low` to `high` (both included); `unit` names them in errors."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # also rejects nan
            raise argparse.ArgumentTypeError(f"expected {unit} between {low:g} and {high:g}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def byte_size(text: str) -> int:
    """Bytes, with an optional K/M/G suffix (powers of 1024): 50M = 52428800."""
    number, scale = text.strip().upper().removesuffix("B"), 1
    if number[-1:] in ("K", "M", "G"):
        number, scale = number[:-1], 1024 ** ("KMG".index(number[-1]) + 1)
    try:
        value = int(float(number) * scale)
    except ValueError:
        value = 0
    if not 1 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected a size from 1 byte to 2G (e.g. 50M), got {text!r}")
    return value


def contact_email(text: str) -> str:
    """A contact for a User-Agent: an e-mail address or URL of 1-200 printable characters, stripped."""
    if not text.strip() or len(text) > 200 or any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise argparse.ArgumentTypeError(f"expected an e-mail address or URL (1-200 printable characters), "
                                         f"got {text!r}")
    return text.strip()


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0-65535 (0 picks a free one), got {text!r}")
    return value


def http_base_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL with a host, got {text!r}")
    return text.rstrip("/")
