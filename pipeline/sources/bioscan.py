"""BIOSCAN-1M: the metadata (TSV or JSON-LD) plus the images of `cropped_256.zip` or its extracted `partN/` folders.

    .venv/bin/python -c "
    import apache_beam as beam
    from pipeline.sources.bioscan import ReadBioscan
    with beam.Pipeline('FnApiRunner') as p:
        kit = 'demo-out/kit/bioscan/'
        out = p | ReadBioscan(kit + 'BIOSCAN_Insect_Dataset_metadata.tsv', kit + 'cropped_256.zip')
        out['failures'] | beam.Map(print)"

Metadata: the release TSV (28 columns, `chunk_number`, `copyright_license`, `copyright_holder`) or the pre-release one
(`licence`, `licence_holder`, `image_tar`, no `chunk_number`); the variant is told by its header. A `.json` or
`.jsonld` path is read as the release's JSON-LD: a top-level JSON array of flat records with the TSV's field names
(as BioCLIP's own loader reads it, `json.load` then `row["order"]`), or an object whose `@graph` is that array;
`{"@value": x}` values are unwrapped. A JSON-LD failure's `line` is the 1-based record index.
`not_classified`, `no_data` and empty cells are missing ranks (""); subfamily, tribe and subspecies go to provenance.
IMAGES is the zip (opened once per worker; members are found by `partN/image_file`, else by a unique file name, and
read into memory, never extracted) or a directory holding `partN/` (directly or under `bioscan/images/cropped_256/`).
`ReadBioscan` returns `{"records": PCollection[SourceImage], "failures": PCollection[Failure]}`.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.fsio import join, open_read
from pipeline.records import Failure, Reason, SourceRecord, treeoflife_id
from pipeline.sources.common import FAILURES, RECORDS, is_safe_member, route

SOURCE = "bioscan"
SourceImage = tuple[SourceRecord, bytes]
Located = tuple[SourceRecord, int]  # a record and the line (JSON-LD: record index) of its metadata row
MISSING = frozenset({"", "not_classified", "no_data"})
LABEL_RANKS = ("phylum", "class", "order", "family", "genus", "species")
KEY_RANKS = ("order", "family", "genus", "species")
PROVENANCE_FIELDS = ("processid", "sampleid", "uri", "chunk_number", "subfamily", "tribe", "subspecies")
RANK_PROVENANCE = frozenset({"subfamily", "tribe", "subspecies"})  # ranks kept out of the label
REQUIRED_COLUMNS = ("image_file", "order", "family", "genus", "species")
ZIP_ROOT = "bioscan/images/cropped_256"


def text(value: object) -> str:
    if isinstance(value, Mapping) and "@value" in value:
        value = value["@value"]
    return "" if value is None else str(value).strip()


def rank(value: object) -> str:
    name = text(value)
    return "" if name in MISSING else name


def first_of(row: Mapping[str, object], *names: str) -> str:
    return next((text(row[name]) for name in names if text(row.get(name))), "")


def bioscan_record(row: Mapping[str, object]) -> SourceRecord:
    """The record of one metadata row (release or pre-release field names) whose image_file is usable."""
    image_file, chunk = text(row["image_file"]), text(row.get("chunk_number")).removesuffix(".0")  # JSON may say 3.0
    return SourceRecord.create(
        SOURCE, image_file, image_ref=f"part{chunk}/{image_file}" if chunk else image_file,
        label_key="bioscan:" + "|".join(rank(row.get(name)) for name in KEY_RANKS),
        label=tuple((name, rank(row.get(name))) for name in LABEL_RANKS),
        license=first_of(row, "copyright_license", "licence"),
        rights_holder=first_of(row, "copyright_holder", "licence_holder"),
        provenance=tuple((name, rank(row.get(name)) if name in RANK_PROVENANCE else text(row.get(name)))
                         for name in PROVENANCE_FIELDS))


def row_result(row: Mapping[str, object], file: str, line: int, first_at: dict[str, int]) -> Located | Failure:
    """A located record, or why the row cannot be one (no image_file, an unsafe one, a repeated one)."""
    image_file = text(row.get("image_file"))
    if not image_file:
        return Failure.of(Reason.MALFORMED_ROW, "image_file is empty", source=SOURCE, file=file, line=line)
    if not is_safe_member(image_file):
        return Failure(SOURCE, Reason.UNSAFE_PATH.stage, Reason.UNSAFE_PATH, f"image_file {image_file!r} escapes the "
                       "image root", image_file, treeoflife_id(SOURCE, image_file), file, line)
    if image_file in first_at:
        detail = f"duplicate image_file {image_file!r}, first at {file}:{first_at[image_file]}"
        return Failure.of(Reason.MALFORMED_ROW, detail, source=SOURCE, file=file, line=line)
    first_at[image_file] = line
    return bioscan_record(row), line


def check_columns(columns: Iterable[str], file: str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise ValueError(f"{file} is not BIOSCAN metadata: no column {', '.join(missing)} "
                         f"(expected the release or pre-release header with {', '.join(REQUIRED_COLUMNS)})")


def parse_bioscan_tsv(lines: Iterable[str], file: str) -> Iterator[Located | Failure]:
    """Records of a metadata TSV (first line the header), each with its line; repeated headers are skipped."""
    header: list[str] | None = None
    first_at: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.rstrip("\r\n").split("\t")
        if header is None:
            header = [name.strip().lstrip("\ufeff") for name in fields]
            check_columns(header, file)
        elif fields != header and line.strip():
            if len(fields) != len(header):
                yield Failure.of(Reason.MALFORMED_ROW, f"expected {len(header)} tab-separated fields, got {len(fields)}",
                                 source=SOURCE, file=file, line=number)
            else:
                yield row_result(dict(zip(header, fields)), file, number, first_at)


def jsonld_rows(document: object, file: str) -> list:
    if isinstance(document, Mapping) and isinstance(document.get("@graph"), list):
        return document["@graph"]
    if isinstance(document, list):
        return document
    raise ValueError(f"{file}: expected a JSON array of BIOSCAN records or an object with an '@graph' list, "
                     f"got {type(document).__name__}")


def parse_bioscan_jsonld(text_or_obj: str | bytes | object, file: str) -> Iterator[Located | Failure]:
    """Records of the JSON-LD metadata, each with its 1-based record index as the line."""
    document = json.loads(text_or_obj) if isinstance(text_or_obj, (str, bytes)) else text_or_obj
    rows = jsonld_rows(document, file)
    if rows and isinstance(rows[0], Mapping):
        check_columns(rows[0].keys(), file)
    first_at: dict[str, int] = {}
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            yield Failure.of(Reason.MALFORMED_ROW, f"record {index} is a {type(row).__name__}, not an object",
                             source=SOURCE, file=file, line=index)
        else:
            yield row_result(row, file, index, first_at)


def iter_bioscan_metadata(path: str) -> Iterator[Located | Failure]:
    """Every row of the metadata at `path`: JSON-LD for `.json`/`.jsonld`, TSV otherwise (streamed)."""
    with open_read(path) as raw:
        if path.endswith((".jsonld", ".json")):
            yield from parse_bioscan_jsonld(json.load(raw), path)
        else:
            yield from parse_bioscan_tsv(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), path)


def basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def zip_index(names: Iterable[str]) -> dict[str, list[str]]:
    """Member names by file name, so a record finds its member wherever the zip's prefix puts it."""
    index: dict[str, list[str]] = {}
    for name in names:
        if not name.endswith("/"):
            index.setdefault(basename(name), []).append(name)
    return index


def resolve_member(index: Mapping[str, list[str]], image_ref: str) -> str | None:
    """The member ending in `partN/image_file`, else the only member with that file name."""
    candidates = index.get(basename(image_ref), [])
    exact = [name for name in candidates if name == image_ref or name.endswith("/" + image_ref)]
    chosen = exact or (candidates if len(candidates) == 1 else [])
    return min(chosen, key=lambda name: (not is_safe_member(name), name)) if chosen else None


def read_zip_member(archive: zipfile.ZipFile, index: Mapping[str, list[str]], located: Located, zip_path: str,
                    metadata: str) -> SourceImage | Failure:
    """A record with its member's bytes (read into memory), or missing_image / unsafe_path at its metadata row."""
    record, line = located
    name = resolve_member(index, record.image_ref)
    if name is None:
        return Failure.of(Reason.MISSING_IMAGE, f"{record.image_ref} is not in {zip_path}", record=record, file=metadata,
                          line=line)
    if not is_safe_member(name):
        return Failure.of(Reason.UNSAFE_PATH, f"{zip_path} member {name!r} escapes the archive root; not read",
                          record=record, file=metadata, line=line)
    try:
        return record, archive.read(name)
    except (zipfile.BadZipFile, zlib.error, OSError) as error:
        return Failure.of(Reason.MISSING_IMAGE, f"{zip_path} member {name!r} is unreadable: {error}", record=record,
                          file=metadata, line=line)


def folder_root(images: str) -> str:
    """The directory holding the `partN/` folders: IMAGES itself or IMAGES/bioscan/images/cropped_256."""
    nested = join(images, *ZIP_ROOT.split("/"))
    return nested if FileSystems.exists(nested) else images


def read_folder_image(root: str, located: Located, metadata: str) -> SourceImage | Failure:
    record, line = located
    path = join(root, *record.image_ref.split("/"))
    try:
        with open_read(path) as handle:
            return record, handle.read()
    except OSError as error:
        return Failure.of(Reason.MISSING_IMAGE, f"{path} not readable: {error.strerror or error}", record=record,
                          file=metadata, line=line)


class ParseMetadata(beam.DoFn):
    def process(self, path: str) -> Iterator[object]:
        for item in iter_bioscan_metadata(path):
            yield route(SOURCE, item)


class ReadZipImages(beam.DoFn):
    """Opens the zip once per worker (setup) and reads each record's member on demand."""

    def __init__(self, zip_path: str, metadata: str) -> None:
        self.zip_path, self.metadata = zip_path, metadata

    def setup(self) -> None:
        self.handle = open_read(self.zip_path)
        self.archive = zipfile.ZipFile(self.handle)
        self.index = zip_index(self.archive.namelist())

    def process(self, located: Located) -> Iterator[object]:
        yield route(SOURCE, read_zip_member(self.archive, self.index, located, self.zip_path, self.metadata))

    def teardown(self) -> None:
        self.archive.close()
        self.handle.close()


class ReadFolderImages(beam.DoFn):
    def __init__(self, images: str, metadata: str) -> None:
        self.images, self.metadata = images, metadata

    def setup(self) -> None:
        self.root = folder_root(self.images)

    def process(self, located: Located) -> Iterator[object]:
        yield route(SOURCE, read_folder_image(self.root, located, self.metadata))


class ReadBioscan(beam.PTransform):
    """BIOSCAN-1M records with their original bytes: `{"records": SourceImage, "failures": Failure}`."""

    def __init__(self, metadata_path: str, images: str) -> None:
        super().__init__()
        if not metadata_path or not images:
            raise ValueError(f"ReadBioscan needs the metadata TSV/JSON-LD and cropped_256.zip or its folder; got "
                             f"metadata_path={metadata_path!r}, images={images!r}")
        self.metadata_path, self.images = metadata_path, images

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        reader = (ReadZipImages(self.images, self.metadata_path) if self.images.endswith(".zip")
                  else ReadFolderImages(self.images, self.metadata_path))
        parsed = (pbegin
                  | "MetadataPath" >> beam.Create([self.metadata_path])
                  | "ParseMetadata" >> beam.ParDo(ParseMetadata()).with_outputs(FAILURES, main=RECORDS))  # Located
        read = (parsed[RECORDS]
                | "SpreadRecords" >> beam.Reshuffle()
                | "ReadImages" >> beam.ParDo(reader).with_outputs(FAILURES, main=RECORDS))  # SourceImage
        return {RECORDS: read[RECORDS], FAILURES: (parsed[FAILURES], read[FAILURES]) | "Failures" >> beam.Flatten()}
