"""ProcessImages routes each image to samples or to a failure with the image's reason."""

import io

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipeline.images import ResizeSpec
from pipeline.process import ProcessImages
from pipeline.records import Failure, Reason, SourceRecord


def record(native_id: str) -> SourceRecord:
    return SourceRecord.create("inat21", native_id, image_ref=f"{native_id}.jpg", label_key="inat21:1", label=())


def jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def pipeline() -> TestPipeline:
    return TestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]))


def test_good_images_become_samples_and_bad_ones_failures_with_their_reason() -> None:
    good, truncated = jpeg((640, 480)), jpeg((640, 480))[:300]
    inputs = [(record("1"), good), (record("2"), truncated), (record("3"), b"<html>oops</html>"), (record("4"), b"")]
    with pipeline() as p:
        outputs = p | beam.Create(inputs) | ProcessImages(ResizeSpec(size=64))
        sizes = outputs.samples | beam.Map(lambda s: (s[0].native_id, s[1].width, s[1].height, s[1].original_width))
        assert_that(sizes, equal_to([("1", 64, 64, 640)]), label="samples")
        reasons = outputs.failures | beam.Map(lambda f: (f.native_id, f.stage, f.reason))
        assert_that(reasons, equal_to([("2", "process", Reason.TRUNCATED_IMAGE), ("3", "process", Reason.DECODE_ERROR),
                                       ("4", "process", Reason.EMPTY_IMAGE)]), label="failures")


def test_failures_keep_the_record_identity() -> None:
    with pipeline() as p:
        failures = (p | beam.Create([(record("9"), b"not an image")]) | ProcessImages()).failures
        assert_that(failures | beam.Map(lambda f: isinstance(f, Failure) and f.treeoflife_id == record("9").treeoflife_id),
                    equal_to([True]))


def test_empty_input_gives_no_output() -> None:
    with pipeline() as p:
        outputs = p | beam.Create([]) | ProcessImages()
        assert_that(outputs.samples, equal_to([]), label="samples")
        assert_that(outputs.failures, equal_to([]), label="failures")
