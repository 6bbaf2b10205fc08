"""What the three source readers share: output tags, routing of failures, and the archive-path safety check."""

from __future__ import annotations

import re

from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from pipeline.records import Failure

RECORDS, FAILURES = "records", "failures"
_DRIVE = re.compile(r"[A-Za-z]:")


def is_safe_member(name: str) -> bool:
    """False for a path that is empty, absolute (`/x`, `\\x`, `C:x`) or climbs out of its root (`..`)."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith(("/", "\\")) and not _DRIVE.match(name) and ".." not in parts


def route(source: str, item: object) -> object:
    """Failures to the dead-letter output, counted per source and reason; anything else to the main output."""
    if isinstance(item, Failure):
        Metrics.counter(source, item.reason.value).inc()
        return TaggedOutput(FAILURES, item)
    return item
