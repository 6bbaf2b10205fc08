"""iNat21: `train.json` (COCO-style) plus its images, from the extracted `train/` tree or streamed from `train.tar.gz`.

    .venv/bin/python -c "
    import apache_beam as beam
    from pipeline.sources.inat21 import ReadInat21
    with beam.Pipeline('FnApiRunner') as p:
        out = p | ReadInat21('demo-out/kit/inat21/train.json', 'demo-out/kit/inat21/train.tar.gz')
        out['failures'] | beam.Map(print)"

IMAGES is either an archive (`.tar.gz`, `.tgz`, `.tar`), streamed once and never extracted (each member is held in
memory only while it is passed on, and joined to its record by file name), or the directory the JSON's `file_name`
values are relative to (the one holding `train/`; `train/` itself works too), read one file per record.
`ReadInat21` returns `{"records": PCollection[SourceImage], "failures": PCollection[Failure]}`. An image with no
annotation, or whose annotation names no category, is a failure (malformed_row); one whose file the tree or the
archive lacks is missing_image; a `file_name` or archive member that is absolute or climbs out (`../`) is
unsafe_path. The JSON has no line structure, so its failures name `images[i]` in the detail, with line 0.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator, Mapping

import apache_beam as beam

from pipeline.fsio import join, open_read
from pipeline.records import Failure, Reason, SourceRecord, treeoflife_id
from pipeline.sources.common import FAILURES, RECORDS, is_safe_member, route

SOURCE = "inat21"
SourceImage = tuple[SourceRecord, bytes]
Member = tuple[str, bytes]  # (archive member name, its bytes)
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def member_name(name: str) -> str:
    """An archive path as the JSON writes it: `./train/x.jpg` -> `train/x.jpg`."""
    while name.startswith("./"):
        name = name[2:]
    return name


def text(value: object) -> str:
    return "" if value is None else str(value).strip()


def failure(reason: Reason, detail: str, file: str, native_id: str = "") -> Failure:
    """A failure of image `native_id` (or of an unusable entry, with no id) in `file`."""
    tid = treeoflife_id(SOURCE, native_id) if native_id else ""
    return Failure(SOURCE, reason.stage, reason, detail, native_id, tid, file, 0)


def category_label(category: Mapping) -> tuple[tuple[str, str], ...]:
    """The seven ranks, the common name, the category id and the supercategory, as the JSON gives them."""
    ranks = tuple((rank, text(category.get(rank))) for rank in RANKS)
    return ranks + (("common_name", text(category.get("common_name"))), ("category_id", text(category.get("id"))),
                    ("supercategory", text(category.get("supercategory"))))


def image_record(image: Mapping, annotation: Mapping | None, categories: Mapping[object, Mapping],
                 licenses: Mapping[object, str], where: str, file: str) -> SourceRecord | Failure:
    """The record of one `images[]` entry whose id is known, or the failure that says why it has none."""
    native_id, file_name = text(image.get("id")), member_name(text(image.get("file_name")))
    if not file_name:
        return failure(Reason.MALFORMED_ROW, f"{where} (id {native_id}) has no file_name", file, native_id)
    if not is_safe_member(file_name):
        return failure(Reason.UNSAFE_PATH, f"{where} file_name {file_name!r} escapes the image root", file, native_id)
    if annotation is None:
        return failure(Reason.MALFORMED_ROW, f"{where} (id {native_id}) has no annotation", file, native_id)
    category = categories.get(annotation.get("category_id"))
    if category is None:
        detail = f"{where} (id {native_id}): annotation names category {annotation.get('category_id')!r}, not in categories"
        return failure(Reason.MALFORMED_ROW, detail, file, native_id)
    return SourceRecord.create(
        SOURCE, native_id, image_ref=file_name, label_key=f"inat21:{text(category.get('id'))}",
        label=category_label(category), license=licenses.get(image.get("license"), ""),
        rights_holder=text(image.get("rights_holder")),
        provenance=tuple((key, text(image.get(key))) for key in ("file_name", "date", "latitude", "longitude")))


def parse_inat21_json(text_or_obj: str | bytes | Mapping, file: str = "train.json") -> Iterator[SourceRecord | Failure]:
    """One record (or failure) per `images[]` entry of an iNat21 JSON document, in document order."""
    document = text_or_obj if isinstance(text_or_obj, Mapping) else json.loads(text_or_obj)
    categories = {category.get("id"): category for category in document.get("categories") or []}
    licenses = {entry.get("id"): text(entry.get("name")) for entry in document.get("licenses") or []}
    annotations: dict[object, Mapping] = {}
    for annotation in document.get("annotations") or []:
        annotations.setdefault(annotation.get("image_id"), annotation)
    first_at: dict[str, str] = {}
    for index, image in enumerate(document.get("images") or []):
        where = f"images[{index}]"
        native_id = text(image.get("id")) if isinstance(image, Mapping) else ""
        if not native_id:
            yield failure(Reason.MALFORMED_ROW, f"{where} has no id", file)
        elif native_id in first_at:
            detail = f"{where}: duplicate image id {native_id}, first at {first_at[native_id]}"
            yield failure(Reason.MALFORMED_ROW, detail, file)
        else:
            first_at[native_id] = where
            yield image_record(image, annotations.get(image.get("id")), categories, licenses, where, file)


def iter_tar_images(path: str) -> Iterator[Member | Failure]:
    """(name, bytes) of each regular file of a tar archive, streamed in order; unsafe names become failures."""
    with open_read(path) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue  # directories and links hold no image; links are never followed
            if not is_safe_member(member.name):
                yield failure(Reason.UNSAFE_PATH, f"archive member {member.name!r} escapes the archive root; not read",
                              path)
                continue
            yield member_name(member.name), tar.extractfile(member).read()


def join_member(name: str, records: list[SourceRecord], members: list[bytes],
                archive: str) -> Iterator[SourceImage | Failure]:
    """Each record that names archive member `name`, with its bytes, or missing_image if the archive lacks it."""
    data = max(members) if members else None  # a name stored twice: pick one deterministically
    for record in records:
        if data is None:
            yield Failure.of(Reason.MISSING_IMAGE, f"{name} is not in the archive", record=record, file=archive)
        else:
            yield record, data


def image_path(root: str, image_ref: str) -> str:
    """Where a `file_name` lives under `root`, which may be the directory holding `train/` or `train/` itself."""
    top, _, rest = image_ref.partition("/")
    if rest and posixpath.basename(root.rstrip("/\\")) == top:
        return join(root, rest)
    return join(root, image_ref)


def read_tree_image(root: str, record: SourceRecord) -> SourceImage | Failure:
    path = image_path(root, record.image_ref)
    try:
        with open_read(path) as handle:
            return record, handle.read()
    except OSError as error:
        return Failure.of(Reason.MISSING_IMAGE, f"not readable: {error.strerror or error}", record=record, file=path)


class ParseJson(beam.DoFn):
    def process(self, path: str) -> Iterator[object]:
        with open_read(path) as handle:
            document = json.load(handle)
        for item in parse_inat21_json(document, path):
            yield route(SOURCE, item)


class StreamTar(beam.DoFn):
    def process(self, path: str) -> Iterator[object]:
        for item in iter_tar_images(path):
            yield route(SOURCE, item)


class JoinMembers(beam.DoFn):
    def __init__(self, archive: str) -> None:
        self.archive = archive

    def process(self, element: tuple[str, Mapping[str, list]]) -> Iterator[object]:
        name, grouped = element
        for item in join_member(name, list(grouped["records"]), list(grouped["members"]), self.archive):
            yield route(SOURCE, item)


class ReadTreeImage(beam.DoFn):
    def __init__(self, root: str) -> None:
        self.root = root

    def process(self, record: SourceRecord) -> Iterator[object]:
        yield route(SOURCE, read_tree_image(self.root, record))


class ReadInat21(beam.PTransform):
    """iNat21 records with their original bytes: `{"records": SourceImage, "failures": Failure}`."""

    def __init__(self, json_path: str, images: str) -> None:
        super().__init__()
        if not json_path or not images:
            raise ValueError(f"ReadInat21 needs the train.json path and the images tree or archive; got "
                             f"json_path={json_path!r}, images={images!r}")
        self.json_path, self.images = json_path, images

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        parsed = (pbegin
                  | "JsonPath" >> beam.Create([self.json_path])
                  | "ParseJson" >> beam.ParDo(ParseJson()).with_outputs(FAILURES, main=RECORDS))  # SourceRecord
        records = parsed[RECORDS] | "SpreadRecords" >> beam.Reshuffle()
        archive = self.images.endswith(ARCHIVE_SUFFIXES)
        images, failures = self.read_archive(pbegin, records) if archive else self.read_tree(records)
        return {RECORDS: images, FAILURES: (parsed[FAILURES], *failures) | "Failures" >> beam.Flatten()}

    def read_tree(self, records: beam.PCollection) -> tuple[beam.PCollection, list[beam.PCollection]]:
        read = records | "ReadTree" >> beam.ParDo(ReadTreeImage(self.images)).with_outputs(FAILURES, main=RECORDS)
        return read[RECORDS], [read[FAILURES]]  # SourceImage, Failure

    def read_archive(self, pbegin: beam.pvalue.PBegin,
                     records: beam.PCollection) -> tuple[beam.PCollection, list[beam.PCollection]]:
        members = (pbegin
                   | "ArchivePath" >> beam.Create([self.images])
                   | "StreamTar" >> beam.ParDo(StreamTar()).with_outputs(FAILURES, main="members"))  # (name, bytes)
        keyed = records | "KeyByFile" >> beam.Map(lambda record: (record.image_ref, record))  # (name, SourceRecord)
        joined = ({"records": keyed, "members": members["members"]}
                  | "JoinByFile" >> beam.CoGroupByKey()  # (name, {"records": [...], "members": [bytes]})
                  | "Pair" >> beam.ParDo(JoinMembers(self.images)).with_outputs(FAILURES, main=RECORDS))  # SourceImage
        return joined[RECORDS], [members[FAILURES], joined[FAILURES]]
