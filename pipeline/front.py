"""The front half of the build: read the three sources and process every image, keeping each failure as data.

    with beam.Pipeline("FnApiRunner") as p:
        outputs = p | FrontHalf(SourcePaths.from_kit(Path("demo-out/kit"), Path("demo-out/downloads")), ResizeSpec())

`FrontHalf` returns `{"samples": (SourceRecord, Processed), "failures": Failure}`; a source whose paths are not
given is skipped, so a build may use any subset of iNat21, BIOSCAN-1M and EOL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam

from pipeline.images import ResizeSpec
from pipeline.process import FAILURES, ProcessImages
from pipeline.sources.bioscan import ReadBioscan
from pipeline.sources.eol import ReadEol
from pipeline.sources.inat21 import ReadInat21

SAMPLES = "samples"


@dataclass(frozen=True, slots=True)
class SourcePaths:
    """Where each source lives (local paths or FileSystems URLs); empty strings leave a source out."""

    inat21_json: str = ""
    inat21_images: str = ""
    bioscan_metadata: str = ""
    bioscan_images: str = ""
    eol_manifest: str = ""
    eol_downloads: str = ""

    def __post_init__(self) -> None:
        for name, other in (("inat21_json", "inat21_images"), ("bioscan_metadata", "bioscan_images"),
                            ("eol_manifest", "eol_downloads")):
            if bool(getattr(self, name)) != bool(getattr(self, other)):
                raise ValueError(f"{name} and {other} go together; got {name}={getattr(self, name)!r}, "
                                 f"{other}={getattr(self, other)!r}")

    @classmethod
    def from_kit(cls, kit: Path, downloads: Path) -> SourcePaths:
        """The sample kit's layout (iNat21 from its tarball, BIOSCAN from its zip)."""
        return cls(str(kit / "inat21/train.json"), str(kit / "inat21/train.tar.gz"),
                   str(kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv"), str(kit / "bioscan/cropped_256.zip"),
                   str(kit / "eol/media_manifest.tgz"), str(downloads))


class ReadSources(beam.PTransform):
    """Every configured source -> `{"records": SourceImage, "failures": Failure}` (flattened across sources)."""

    def __init__(self, paths: SourcePaths) -> None:
        super().__init__()
        self._paths = paths

    def expand(self, pbegin):
        paths = self._paths
        readers = [(name, reader) for name, reader, given in (
            ("iNat21", lambda: ReadInat21(paths.inat21_json, paths.inat21_images), paths.inat21_json),
            ("BIOSCAN", lambda: ReadBioscan(paths.bioscan_metadata, paths.bioscan_images), paths.bioscan_metadata),
            ("EOL", lambda: ReadEol(paths.eol_manifest, paths.eol_downloads), paths.eol_manifest)) if given]
        if not readers:
            raise ValueError("no source configured: give the paths of at least one of iNat21, BIOSCAN-1M, EOL")
        outputs = [pbegin | f"Read{name}" >> reader() for name, reader in readers]
        return {
            "records": [o["records"] for o in outputs] | "AllRecords" >> beam.Flatten(),  # SourceImage
            FAILURES: [o["failures"] for o in outputs] | "ReadFailures" >> beam.Flatten(),  # Failure
        }


class FrontHalf(beam.PTransform):
    """Read every source and process every image: `{"samples": (SourceRecord, Processed), "failures": Failure}`."""

    def __init__(self, paths: SourcePaths, spec: ResizeSpec = ResizeSpec()) -> None:
        super().__init__()
        self._paths, self._spec = paths, spec

    def expand(self, pbegin):
        read = pbegin | "ReadSources" >> ReadSources(self._paths)
        processed = read["records"] | "ProcessImages" >> ProcessImages(self._spec)
        failures = (read[FAILURES], processed.failures) | "AllFailures" >> beam.Flatten()  # Failure
        return {SAMPLES: processed.samples, FAILURES: failures}
