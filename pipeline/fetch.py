"""The polite HTTP client behind `tol download`: one row's URLs in, the original bytes or a failure reason out.

    tol download demo-out/kit/eol/media_manifest.tgz demo-out/out/downloads --contact you@example.org

Pure Python over `requests`, no Beam. `Fetcher(session, policy).fetch([full_size_url, medium_source_url])` tries
each URL in turn and returns one `FetchResult`: the original bytes, or the `Reason` it failed with. Each request
waits its turn under `pipeline.politeness` (per-host adaptive rate and concurrency cap); transient failures are
retried after backoff or the server's Retry-After; bodies are read with a byte cap and must look like an image.
Every request carries a User-Agent naming the project and a contact.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from pipeline.politeness import THROTTLE_STATUSES, Clock, HostLimits, Sleep, backoff_delay, parse_retry_after
from pipeline.records import Reason

PROJECT_URL = "https://github.com/treeoflife/treeoflife"
UNSET_CONTACT = "unset"
MIB = 1024 * 1024
CHUNK_BYTES = MIB  # large reads: per-chunk Python work, not bytes, dominated the client CPU at 64 KiB
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Leading bytes of the image formats we keep; WEBP also needs "WEBP" at offset 8 (checked in sniff_image).
IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"BM", "bmp"), (b"RIFF", "webp"),
)
GENERIC_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/binary"})
# The flag that sets each FetchPolicy field, so configuration errors name what the user typed.
POLICY_FLAGS = {
    "rate": "--rate", "burst": "--burst", "per_host_concurrency": "--per-host-concurrency",
    "connect_timeout": "--connect-timeout", "read_timeout": "--read-timeout", "max_attempts": "--max-attempts",
    "max_bytes": "--max-bytes", "backoff_base": "--backoff-base", "backoff_cap": "--backoff-cap",
    "max_retry_after": "--max-retry-after", "user_agent": "--contact",
}


def user_agent(contact: str = UNSET_CONTACT) -> str:
    """The User-Agent every request carries: the project, where to read about it, and whom to contact."""
    return f"treeoflife/0.1 (+{PROJECT_URL}; contact: {contact})"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How one worker fetches: `rate` is requests/s per host for this worker (see `split`); sizes in bytes."""

    rate: float = 10.0
    burst: float = 1.0  # token-bucket capacity: requests that may go back to back after a pause
    per_host_concurrency: int = 4
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 3
    max_bytes: int = 50 * MIB
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_retry_after: float = 300.0  # a longer Retry-After ends the URL's retries rather than stall a thread
    max_redirects: int = 5
    user_agent: str = user_agent()
    aimd_decrease: float = 0.5  # rate multiplier on 429/503
    aimd_increase: float = 0.05  # fraction of `rate` added back per success

    def __post_init__(self) -> None:
        for name, low, high in (("rate", 1e-6, 10_000), ("burst", 1, 1_000), ("per_host_concurrency", 1, 256),
                                ("connect_timeout", 0.001, 3_600), ("read_timeout", 0.001, 3_600),
                                ("max_attempts", 1, 100), ("max_bytes", 1, 2**31 - 1), ("backoff_base", 0, 3_600),
                                ("backoff_cap", 0, 86_400), ("max_retry_after", 0, 86_400),
                                ("max_redirects", 0, 30), ("aimd_decrease", 0.01, 1),
                                ("aimd_increase", 0, 1)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{POLICY_FLAGS.get(name, name)} must be between {low:g} and {high:g}, got {value!r}")
        if self.backoff_base > self.backoff_cap:
            raise ValueError(f"--backoff-base ({self.backoff_base:g} s) must not exceed --backoff-cap "
                             f"({self.backoff_cap:g} s)")
        if any(ord(char) < 32 or ord(char) == 127 for char in self.user_agent):
            raise ValueError(f"--contact must not contain control characters, got User-Agent {self.user_agent!r}")

    def split(self, workers: int) -> FetchPolicy:
        """This policy for one of `workers` workers sharing the job's per-host rate."""
        if workers < 1:
            raise ValueError(f"the number of workers sharing --rate must be >= 1, got {workers}")
        return replace(self, rate=self.rate / workers)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt at one URL (redirects followed): the bytes, or a reason and whether another attempt may help."""

    reason: Reason | None
    detail: str = ""
    retryable: bool = False
    http_status: int = 0
    content_type: str = ""
    data: bytes | None = None
    byte_count: int = 0
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Redirect:
    """A redirect response: where it points (already resolved against the request URL)."""

    location: str
    http_status: int


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The fate of one manifest row's URLs: the fields of a download part row, less the manifest ids."""

    url: str  # the URL whose bytes these are, or whose failure is reported
    ok: bool
    reason: Reason | None
    detail: str
    http_status: int
    content_type: str
    data: bytes | None
    md5: str
    byte_count: int
    elapsed_s: float
    attempts: int

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be fetched (not http/https, no host, malformed), or None if it can."""
    if not url or any(char.isspace() or ord(char) < 32 for char in url):
        return f"{url!r} is empty or contains whitespace"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:
        return f"{url!r} is malformed: {error}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// URL"
    if not host:
        return f"{url!r} has no host"
    return None


def classify_status(status: int) -> tuple[Reason | None, bool]:
    """(reason, retryable) for an HTTP status that is not a redirect; reason None means the body may be an image."""
    if 200 <= status < 300:
        return None, False
    if status in (404, 410):
        return Reason.HTTP_NOT_FOUND, False
    if status == 429:
        return Reason.HTTP_RATE_LIMITED, True
    if 400 <= status < 500:
        return Reason.HTTP_CLIENT_ERROR, False
    if 300 <= status < 400:
        return Reason.REDIRECT_REFUSED, False  # a 3xx that is not a redirect we can follow (300, 304, ...)
    return Reason.HTTP_SERVER_ERROR, 500 <= status < 600


def classify_exception(error: BaseException) -> tuple[Reason, bool, str]:
    """(reason, retryable, detail) for an exception raised while requesting or reading a response."""
    inner = error.args[0] if error.args else None
    brief = f"{type(error).__name__}: {str(error)[:200]}"
    if isinstance(error, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)) or isinstance(
            inner, urllib3.exceptions.ReadTimeoutError):  # requests re-raises body read timeouts as ConnectionError
        return Reason.TIMEOUT, True, brief
    if isinstance(error, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return Reason.CONNECTION_ERROR, True, f"truncated or broken body ({brief})"
    if isinstance(error, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                          requests.exceptions.InvalidSchema, requests.exceptions.URLRequired)):
        return Reason.BAD_URL, False, brief
    if isinstance(error, requests.exceptions.ContentDecodingError):
        return Reason.CONNECTION_ERROR, False, f"undecodable Content-Encoding ({brief})"
    return Reason.CONNECTION_ERROR, True, brief


def is_non_image_type(content_type: str) -> bool:
    """True when a declared Content-Type rules out an image (text/html, application/json, ...); empty is allowed."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return bool(mime) and not mime.startswith("image/") and mime not in GENERIC_BINARY_TYPES


def sniff_image(data: bytes) -> str | None:
    """The image format the leading bytes announce (jpeg, png, gif, webp, tiff, bmp), or None."""
    for magic, kind in IMAGE_MAGIC:
        if data.startswith(magic) and (kind != "webp" or data[8:12] == b"WEBP"):
            return kind
    return None


def read_capped(chunks: Iterable[bytes], max_bytes: int) -> tuple[bytes, bool]:
    """(the bytes read, whether the body went over `max_bytes`); stops pulling chunks as soon as it does."""
    parts, total = [], 0
    for chunk in chunks:
        parts.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            return b"".join(parts), True
    return b"".join(parts), False


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length a response declares, or None."""
    text = (headers.get("Content-Length") or "").strip()
    return int(text) if text.isdigit() else None


def combine(tried: Sequence[tuple[str, Outcome, int]], elapsed_s: float) -> FetchResult:
    """One result from the outcomes of each URL tried, in order: the success, else the first URL's failure."""
    attempts = sum(count for _, _, count in tried)
    url, outcome, _ = tried[-1] if tried[-1][1].ok else tried[0]
    if outcome.ok:
        fallback = "; ".join(f"{u}: {o.reason.value} ({o.detail})" for u, o, _ in tried[:-1] if o.reason)
        detail = f"fell back to {url} after {fallback}" if fallback else ""
        data = outcome.data or b""
        return FetchResult(url, True, None, detail, outcome.http_status, outcome.content_type, data,
                           hashlib.md5(data).hexdigest(), len(data), elapsed_s, attempts)
    detail = outcome.detail if len(tried) == 1 else "; then ".join(
        f"{u}: {o.reason.value} ({o.detail})" for u, o, _ in tried)
    return FetchResult(url, False, outcome.reason, detail, outcome.http_status, outcome.content_type, None, "",
                       outcome.byte_count, elapsed_s, attempts)


def open_session(policy: FetchPolicy, pool_size: int = 16) -> requests.Session:
    """A session that ignores proxy variables and .netrc, retries nothing itself, and keeps `pool_size` connections."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": policy.user_agent, "Accept": "image/*,*/*;q=0.5"})
    return session


class Fetcher:
    """Fetches a row's URLs politely; thread-safe, one per worker. Clocks, sleep and randomness are injectable."""

    def __init__(self, session: requests.Session, policy: FetchPolicy, limits: HostLimits | None = None, *,
                 clock: Clock = time.monotonic, sleep: Sleep = time.sleep, wall_clock: Clock = time.time,
                 rng: random.Random | None = None) -> None:
        self.session, self.policy = session, policy
        self.limits = limits or HostLimits(policy, clock, sleep)
        self._clock, self._sleep, self._wall_clock = clock, sleep, wall_clock
        self._rng = rng or random.Random()
        self._headers = {"User-Agent": policy.user_agent}

    def fetch(self, urls: Sequence[str]) -> FetchResult:
        """Try each distinct non-empty URL in order until one gives an image (full-size copy, then medium source)."""
        started = self._clock()
        candidates = list(dict.fromkeys(url.strip() for url in urls if url and url.strip()))
        if not candidates:
            return combine([("", Outcome(Reason.BAD_URL, "the row has no URL"), 0)], 0.0)
        tried = []
        for url in candidates:
            outcome, attempts = self.fetch_url(url)
            tried.append((url, outcome, attempts))
            if outcome.ok:
                break
        return combine(tried, self._clock() - started)

    def fetch_url(self, url: str) -> tuple[Outcome, int]:
        """(outcome, attempts made) for one URL, retrying transient failures with backoff and Retry-After."""
        problem = url_problem(url)
        if problem is not None:
            return Outcome(Reason.BAD_URL, problem), 0
        for attempt in range(1, self.policy.max_attempts + 1):
            outcome = self.attempt(url)
            if outcome.ok or not outcome.retryable:
                return outcome, attempt
            if attempt == self.policy.max_attempts:
                return replace(outcome, detail=f"{outcome.detail} (after {attempt} attempts)"), attempt
            delay = backoff_delay(attempt, self.policy.backoff_base, self.policy.backoff_cap, self._rng)
            if outcome.retry_after is not None:
                if outcome.retry_after > self.policy.max_retry_after:
                    return replace(outcome, detail=f"{outcome.detail}; Retry-After {outcome.retry_after:g} s exceeds "
                                                   f"--max-retry-after {self.policy.max_retry_after:g} s, so no retry "
                                                   f"(after {attempt} attempts)"), attempt
                delay = max(delay, outcome.retry_after)  # the server's wait, even beyond --backoff-cap
            self._sleep(delay)
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def attempt(self, url: str) -> Outcome:
        """One attempt at `url`, following up to `max_redirects` http(s) redirects by hand."""
        current = url
        for _ in range(self.policy.max_redirects + 1):
            step = self.request(current)
            if isinstance(step, Outcome):
                return step
            problem = url_problem(step.location)
            if problem is not None:
                return Outcome(Reason.REDIRECT_REFUSED, f"HTTP {step.http_status} redirect from {current} refused: "
                                                        f"{problem}", http_status=step.http_status)
            current = step.location
        return Outcome(Reason.REDIRECT_REFUSED, f"more than {self.policy.max_redirects} redirects from {url}",
                       http_status=step.http_status)

    def request(self, url: str) -> Outcome | Redirect:
        """One request under the host's limits; feeds the host's rate back (down on 429/503, up on an answer)."""
        with self.limits.slot(urlsplit(url).netloc.lower()) as limiter:
            timeout = (self.policy.connect_timeout, self.policy.read_timeout)
            try:
                response = self.session.get(url, stream=True, allow_redirects=False, timeout=timeout,
                                            headers=self._headers)
            except (requests.RequestException, OSError) as error:
                reason, retryable, detail = classify_exception(error)
                return Outcome(reason, detail, retryable)
            with response:  # closing an unread streamed response drops the connection: nothing more is downloaded
                step = self.read(url, response)
        if response.status_code in THROTTLE_STATUSES:
            limiter.throttled()
        elif response.status_code < 500:
            limiter.succeeded()
        return step

    def read(self, url: str, response: requests.Response) -> Outcome | Redirect:
        """Judge a response: a redirect to follow, or an outcome (reading the body only if it may be an image)."""
        status, headers = response.status_code, response.headers
        content_type = headers.get("Content-Type", "")
        if status in REDIRECT_STATUSES:
            location = headers.get("Location")
            if not location:
                return Outcome(Reason.REDIRECT_REFUSED, f"HTTP {status} without a Location header", http_status=status)
            return Redirect(urljoin(url, location), status)
        reason, retryable = classify_status(status)
        if reason is not None:
            retry_after = parse_retry_after(headers.get("Retry-After"), self._wall_clock())
            note = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
            return Outcome(reason, f"HTTP {status}{note}", retryable, status, content_type, retry_after=retry_after)
        if is_non_image_type(content_type):
            return Outcome(Reason.NOT_AN_IMAGE, f"Content-Type {content_type!r}", False, status, content_type)
        declared = declared_length(headers)
        limit = self.policy.max_bytes
        if declared is not None and declared > limit:
            return Outcome(Reason.TOO_LARGE, f"Content-Length {declared} exceeds --max-bytes {limit}", False, status,
                           content_type)
        try:
            data, too_large = read_capped(response.iter_content(CHUNK_BYTES), limit)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            reason, retryable, detail = classify_exception(error)
            return Outcome(reason, detail, retryable, status, content_type)
        if too_large:
            return Outcome(Reason.TOO_LARGE, f"body exceeds --max-bytes {limit}; stopped after {len(data)} bytes",
                           False, status, content_type, byte_count=len(data))
        identity = headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")
        if identity and declared is not None and len(data) < declared:
            return Outcome(Reason.CONNECTION_ERROR, f"truncated body: {len(data)} of {declared} bytes", True, status,
                           content_type, byte_count=len(data))
        if sniff_image(data[:16]) is None:
            return Outcome(Reason.NOT_AN_IMAGE, f"body is not JPEG/PNG/GIF/WEBP/TIFF/BMP (starts {data[:8]!r}, "
                                                f"Content-Type {content_type!r})", False, status, content_type,
                           byte_count=len(data))
        return Outcome(None, "", False, status, content_type, data, len(data))
