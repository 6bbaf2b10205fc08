"""Beam step that decodes, verifies, resizes and hashes every source image (the logic is `pipeline.images`).

    records | ProcessImages(ResizeSpec(size=224, mode="squash"))   # -> outputs .samples and .failures

Input elements are `SourceImage = (SourceRecord, original bytes)`; `samples` holds `(SourceRecord, Processed)`,
`failures` one `Failure` per image that could not be used, with a counter per reason.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.images import ImageError, Processed, ResizeSpec, process
from pipeline.records import Failure, SourceRecord

SourceImage = tuple[SourceRecord, bytes]
Sample = tuple[SourceRecord, Processed]
FAILURES = "failures"


class ProcessImageFn(beam.DoFn):
    """Unpack, call `images.process`, count, route."""

    def __init__(self, spec: ResizeSpec) -> None:
        self._spec = spec
        self._ok = Metrics.counter("process", "ok")

    def process(self, element: SourceImage):
        record, data = element
        try:
            processed = process(data, self._spec, dict(record.provenance).get("md5"))
        except ImageError as error:
            Metrics.counter("process", str(error.reason)).inc()
            yield beam.pvalue.TaggedOutput(FAILURES, Failure.of(error.reason, error.detail, record=record))
            return
        self._ok.inc()
        yield record, processed


class ProcessImages(beam.PTransform):
    """SourceImages -> outputs `samples` (SourceRecord, Processed) and `failures` (Failure)."""

    def __init__(self, spec: ResizeSpec = ResizeSpec()) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, source_images):
        return source_images | "Process" >> beam.ParDo(ProcessImageFn(self._spec)).with_outputs(FAILURES, main="samples")
