"""Helpers shared by the Beam tests (on the test path through pytest's `pythonpath`)."""

import hashlib

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import SourceRecord


def sortable(source_image: tuple[SourceRecord, bytes]) -> tuple[str, SourceRecord, str]:
    """(native id, record, md5 of the bytes): equal_to sorts these instead of comparing every pair."""
    record, data = source_image
    return record.native_id, record, hashlib.md5(data).hexdigest()


def run_reader(transform, records: list, failures: list, failure_view=lambda f: f) -> None:
    """Run `transform`; its records must equal `records` (record and bytes), its failures `failures` (as viewed)."""
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | transform
        assert_that(out["records"] | "Sortable" >> beam.Map(sortable), equal_to([sortable(r) for r in records]),
                    label="records")
        assert_that(out["failures"] | "View" >> beam.Map(failure_view), equal_to(failures), label="failures")
