"""The values that flow through the build: source records and failures with their reasons.

Every input record ends exactly once as a kept sample or as a `Failure`; `Reason` is the closed set of reasons,
each belonging to one stage. The sample kit's EXPECTED.json uses the same names.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

# uuid5(NAMESPACE_URL, "https://github.com/treeoflife/treeoflife/id"): fixed forever, so ids never change.
TREEOFLIFE_NAMESPACE = uuid.UUID("b05e1c83-7afd-560c-bafe-2610e2176fc1")
SOURCES = ("inat21", "bioscan", "eol")

LabelPairs = tuple[tuple[str, str], ...]


def treeoflife_id(source: str, native_id: str) -> str:
    """The stable id of a record: uuid5 of `source:native_id` (iNat21 image id, BIOSCAN image_file, EOL content id)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    return str(uuid.uuid5(TREEOFLIFE_NAMESPACE, f"{source}:{native_id}"))


class Stage(enum.StrEnum):
    READ = "read"
    DOWNLOAD = "download"
    PROCESS = "process"
    LABEL = "label"
    DEDUP = "dedup"
    NEAR_DEDUP = "near_dedup"
    LEAKAGE = "leakage"
    EXCLUSION = "exclusion"


class Reason(enum.StrEnum):
    """Why a record was dropped. The stage a reason belongs to is `reason.stage`."""

    # read: the source's own files
    MALFORMED_ROW = "malformed_row"  # wrong field count, unparsable id, required field empty
    MISSING_IMAGE = "missing_image"  # metadata names an image the archive or tree does not hold
    UNSAFE_PATH = "unsafe_path"  # an archive member or path that escapes its root (../, absolute)
    # download: fetching EOL images
    HTTP_NOT_FOUND = "http_not_found"  # 404 or 410, on every URL tried
    HTTP_CLIENT_ERROR = "http_client_error"  # another 4xx
    HTTP_SERVER_ERROR = "http_server_error"  # 5xx after the retries
    HTTP_RATE_LIMITED = "http_rate_limited"  # 429 after the retries
    TIMEOUT = "timeout"  # connect or read timeout after the retries
    CONNECTION_ERROR = "connection_error"  # reset, refused, truncated body, after the retries
    NOT_AN_IMAGE = "not_an_image"  # the body is HTML or another non-image type
    TOO_LARGE = "too_large"  # the body exceeds the maximum size
    REDIRECT_REFUSED = "redirect_refused"  # a redirect to a scheme other than http(s), or too many
    BAD_URL = "bad_url"  # empty, malformed, or not http(s)
    # process: decoding and resizing
    DECODE_ERROR = "decode_error"
    TRUNCATED_IMAGE = "truncated_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNSUPPORTED_MODE = "unsupported_mode"
    EMPTY_IMAGE = "empty_image"
    # label, dedup, leakage, exclusion: the build's decisions
    UNRESOLVED_LABEL = "unresolved_label"
    DUPLICATE_OF = "duplicate_of"
    NEAR_DUPLICATE_OF = "near_duplicate_of"
    LEAKS = "leaks"
    RARE_SPECIES_EXCLUDED = "rare_species_excluded"

    @property
    def stage(self) -> Stage:
        return REASON_STAGES[self]


REASON_STAGES: dict[Reason, Stage] = {
    **{r: Stage.READ for r in (Reason.MALFORMED_ROW, Reason.MISSING_IMAGE, Reason.UNSAFE_PATH)},
    **{r: Stage.DOWNLOAD for r in (Reason.HTTP_NOT_FOUND, Reason.HTTP_CLIENT_ERROR, Reason.HTTP_SERVER_ERROR,
                                   Reason.HTTP_RATE_LIMITED, Reason.TIMEOUT, Reason.CONNECTION_ERROR,
                                   Reason.NOT_AN_IMAGE, Reason.TOO_LARGE, Reason.REDIRECT_REFUSED, Reason.BAD_URL)},
    **{r: Stage.PROCESS for r in (Reason.DECODE_ERROR, Reason.TRUNCATED_IMAGE, Reason.DECOMPRESSION_BOMB,
                                  Reason.UNSUPPORTED_MODE, Reason.EMPTY_IMAGE)},
    Reason.UNRESOLVED_LABEL: Stage.LABEL,
    Reason.DUPLICATE_OF: Stage.DEDUP,
    Reason.NEAR_DUPLICATE_OF: Stage.NEAR_DEDUP,
    Reason.LEAKS: Stage.LEAKAGE,
    Reason.RARE_SPECIES_EXCLUDED: Stage.EXCLUSION,
}


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One image record as its source describes it, before any image is read.

    `image_ref` says where the image lives: a path or archive member for iNat21 and BIOSCAN, the EOL content id
    (its bytes come from the download parts) for EOL. `label_key` is what the taxonomy's label_map is keyed by;
    `label` holds the source's own label fields, in order, and `provenance` the other fields worth keeping.
    """

    source: str
    native_id: str
    treeoflife_id: str
    image_ref: str
    label_key: str
    label: LabelPairs
    license: str = ""
    rights_holder: str = ""
    source_url: str = ""
    provenance: LabelPairs = ()

    @classmethod
    def create(cls, source: str, native_id: str, **fields) -> SourceRecord:
        return cls(source=source, native_id=native_id, treeoflife_id=treeoflife_id(source, native_id), **fields)

    def label_dict(self) -> dict[str, str]:
        return dict(self.label)


@dataclass(frozen=True, slots=True)
class Failure:
    """A dropped record (or an unusable input row, which has no id yet): where, at which stage, and why."""

    source: str
    stage: Stage
    reason: Reason
    detail: str = ""
    native_id: str = ""
    treeoflife_id: str = ""
    file: str = ""
    line: int = 0

    @classmethod
    def of(cls, reason: Reason, detail: str = "", *, record: SourceRecord | None = None, source: str = "",
           file: str = "", line: int = 0) -> Failure:
        """A failure for `record` (or for a row of `file` at `line` that never became a record)."""
        if record is not None:
            return cls(record.source, reason.stage, reason, detail, record.native_id, record.treeoflife_id, file, line)
        return cls(source, reason.stage, reason, detail, file=file, line=line)
