"""Tests for pipeline.fetch: classification, the byte cap, policy checks, and every fault of a real KitServer."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from pipeline.fetch import (
    Fetcher,
    FetchPolicy,
    classify_exception,
    classify_status,
    is_non_image_type,
    open_session,
    read_capped,
    sniff_image,
    url_problem,
    user_agent,
)
from pipeline.records import Reason
from pipeline.serve_kit import OVERSIZE_BYTES, FaultSpec, KitServer, RequestRecord

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"png-body" * 100
FAST = FetchPolicy(rate=200, read_timeout=2, connect_timeout=2, max_attempts=3, backoff_base=0.01, backoff_cap=0.05,
                   user_agent=user_agent("tests@example.org"))


# ---- classification ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "reason", "retryable"), [
    (200, None, False), (206, None, False), (404, Reason.HTTP_NOT_FOUND, False), (410, Reason.HTTP_NOT_FOUND, False),
    (400, Reason.HTTP_CLIENT_ERROR, False), (403, Reason.HTTP_CLIENT_ERROR, False),
    (408, Reason.HTTP_CLIENT_ERROR, False), (429, Reason.HTTP_RATE_LIMITED, True),
    (500, Reason.HTTP_SERVER_ERROR, True), (502, Reason.HTTP_SERVER_ERROR, True),
    (503, Reason.HTTP_SERVER_ERROR, True), (304, Reason.REDIRECT_REFUSED, False),
])
def test_classify_status(status: int, reason: Reason | None, retryable: bool) -> None:
    assert classify_status(status) == (reason, retryable)


@pytest.mark.parametrize(("error", "reason", "retryable"), [
    (requests.ReadTimeout("read timed out"), Reason.TIMEOUT, True),
    (requests.ConnectTimeout("connect timed out"), Reason.TIMEOUT, True),
    (requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, "/", "timed out")), Reason.TIMEOUT, True),
    (requests.exceptions.ChunkedEncodingError("IncompleteRead(10 bytes read, 20 more expected)"),
     Reason.CONNECTION_ERROR, True),
    (requests.ConnectionError("Connection reset by peer"), Reason.CONNECTION_ERROR, True),
    (ConnectionResetError(104, "Connection reset by peer"), Reason.CONNECTION_ERROR, True),
    (requests.exceptions.ContentDecodingError("bad gzip"), Reason.CONNECTION_ERROR, False),
    (requests.exceptions.InvalidURL("bad host"), Reason.BAD_URL, False),
])
def test_classify_exception(error: BaseException, reason: Reason, retryable: bool) -> None:
    assert classify_exception(error)[:2] == (reason, retryable)


def test_sniff_image_knows_each_format_by_its_magic_number() -> None:
    samples = {"jpeg": JPEG, "png": PNG, "gif": b"GIF89a...", "webp": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
               "tiff": b"II*\x00rest", "bmp": b"BMrest"}
    for kind, data in samples.items():
        assert sniff_image(data) == kind
    for data in (b"", b"<!doctype html>", b"RIFF\x10\x00\x00\x00WAVEfmt ", b"%PDF-1.7", b"\x00\x00\x00\x18ftypavif"):
        assert sniff_image(data) is None
    assert not is_non_image_type("image/jpeg") and not is_non_image_type("") and not is_non_image_type(
        "application/octet-stream")
    assert is_non_image_type("text/html; charset=utf-8") and is_non_image_type("application/json")


def test_url_problem_accepts_only_http_and_https_with_a_host() -> None:
    assert url_problem("http://127.0.0.1:8765/a.jpg") is None and url_problem("HTTPS://example.org/a") is None
    for bad in ("", "ftp://example.org/a.jpg", "file:///etc/passwd", "javascript:alert(1)", "http://", "a.jpg",
                "http://[::1/a", "http://example.org/a b.jpg"):
        assert url_problem(bad) is not None, bad


def test_read_capped_stops_pulling_chunks_once_over_the_limit() -> None:
    pulled = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield bytes(1000)

    data, too_large = read_capped(endless(), 2500)
    assert too_large and len(data) == 3000 and len(pulled) == 3
    assert read_capped([b"ab", b"cd"], 4) == (b"abcd", False)


def test_policy_validation_names_the_flag_the_value_and_the_range() -> None:
    with pytest.raises(ValueError, match=r"--rate must be between .* got 0"):
        FetchPolicy(rate=0)
    with pytest.raises(ValueError, match=r"--max-attempts must be between 1 and 100, got 0"):
        FetchPolicy(max_attempts=0)
    with pytest.raises(ValueError, match=r"--read-timeout .* got nan"):
        FetchPolicy(read_timeout=float("nan"))
    with pytest.raises(ValueError, match=r"--backoff-base \(9 s\) must not exceed --backoff-cap \(1 s\)"):
        FetchPolicy(backoff_base=9, backoff_cap=1)
    with pytest.raises(ValueError, match="--contact"):
        FetchPolicy(user_agent=user_agent("me@example.org\r\nX-Injected: 1"))
    assert FetchPolicy(rate=10).split(4).rate == 2.5
    assert user_agent("me@example.org") == (
        "treeoflife/0.1 (+https://github.com/treeoflife/treeoflife; contact: me@example.org)")


# ---- the fetcher against fakes -------------------------------------------------------------------------------------

class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str], chunks: Iterator[bytes]) -> None:
        self.status_code, self.headers, self._chunks, self.closed = status, CaseInsensitiveDict(headers), chunks, False

    def iter_content(self, size: int) -> Iterator[bytes]:
        return self._chunks

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True


class FakeSession:
    """Answers every GET with `respond(url)`, recording the URL and headers."""

    def __init__(self, respond: Callable[[str], FakeResponse]) -> None:
        self.respond, self.calls = respond, []

    def get(self, url: str, **kwargs) -> FakeResponse:
        self.calls.append((url, kwargs))
        return self.respond(url)


def test_a_body_without_content_length_is_cut_off_at_max_bytes() -> None:
    pulled = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield b"\xff\xd8\xff\xe0" + bytes(64 * 1024 - 4)

    response = FakeResponse(200, {"Content-Type": "image/jpeg"}, endless())
    session = FakeSession(lambda url: response)
    result = Fetcher(session, FetchPolicy(max_bytes=100_000)).fetch(["http://h/a.jpg"])
    assert (result.ok, result.reason, len(pulled), response.closed) == (False, Reason.TOO_LARGE, 2, True)
    assert session.calls[0][1]["allow_redirects"] is False and session.calls[0][1]["stream"] is True
    assert session.calls[0][1]["headers"]["User-Agent"].startswith("treeoflife/0.1 (+https://github.com/")


def test_bytes_that_are_no_image_fail_whatever_the_content_type_says() -> None:
    session = FakeSession(lambda url: FakeResponse(200, {"Content-Type": "image/jpeg"}, iter([b"%PDF-1.7 ..."])))
    result = Fetcher(session, FAST).fetch(["http://h/a.jpg"])
    assert (result.reason, result.attempts) == (Reason.NOT_AN_IMAGE, 1) and "%PDF" in result.detail


def test_bad_urls_fail_without_a_request() -> None:
    session = FakeSession(lambda url: pytest.fail(f"requested {url}"))
    fetcher = Fetcher(session, FAST)
    assert fetcher.fetch(["ftp://h/a.jpg"]).reason == Reason.BAD_URL
    assert fetcher.fetch(["", "  "]).reason == Reason.BAD_URL
    assert fetcher.fetch(["not a url"]).attempts == 0


def test_retry_after_is_honoured_beyond_the_backoff_cap_up_to_its_own_limit(clock) -> None:
    session = FakeSession(lambda url: FakeResponse(503, {"Retry-After": "30"}, iter([b""])))
    result = Fetcher(session, FAST, clock=clock, sleep=clock.sleep).fetch(["http://h/a.jpg"])
    assert (result.reason, result.attempts, clock.slept) == (Reason.HTTP_SERVER_ERROR, 3, [30.0, 30.0])
    session = FakeSession(lambda url: FakeResponse(429, {"Retry-After": "3600"}, iter([b""])))
    result = Fetcher(session, FAST, clock=clock, sleep=clock.sleep).fetch(["http://h/a.jpg"])
    assert (result.reason, result.attempts, clock.slept[2:]) == (Reason.HTTP_RATE_LIMITED, 1, [])
    assert "Retry-After 3600 s exceeds --max-retry-after 300 s" in result.detail


def test_the_open_session_ignores_proxies_and_names_the_project() -> None:
    with open_session(FAST) as session:
        assert session.trust_env is False
        assert session.headers["User-Agent"] == user_agent("tests@example.org")


# ---- the fetcher against a real KitServer ---------------------------------------------------------------------------

@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "data").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / "data" / f"{name}.jpg").write_bytes(JPEG + name.encode())
    (root / "data" / "d.png").write_bytes(PNG)
    return root


@pytest.fixture
def serve(images: Path) -> Iterator[Callable[..., KitServer]]:
    servers: list[KitServer] = []

    def start(spec: str = "", **kwargs: object) -> KitServer:
        servers.append(KitServer(images, faults=FaultSpec.parse(spec), **kwargs).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with open_session(FAST) as client:
        yield client


def records(server: KitServer, count: int, timeout: float = 5.0) -> list[RequestRecord]:
    """The server's log once it holds `count` records (handlers log after their response is done)."""
    deadline = time.monotonic() + timeout
    while len(server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.requests


def test_a_clean_fetch_returns_the_original_bytes(serve, session, images: Path) -> None:
    server = serve()
    result = Fetcher(session, FAST).fetch([f"{server.url}/data/d.png"])
    assert (result.ok, result.status, result.reason, result.http_status, result.attempts) == (True, "ok", None, 200, 1)
    assert result.data == PNG and result.byte_count == len(PNG) and result.content_type == "image/png"
    assert result.md5 == hashlib.md5(PNG).hexdigest() and result.detail == ""


def test_404_fails_as_not_found_without_a_retry(serve, session) -> None:
    server = serve()
    result = Fetcher(session, FAST).fetch([f"{server.url}/_fault/status/404/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts, result.data) == (Reason.HTTP_NOT_FOUND, 404, 1, None)
    assert len(records(server, 1)) == 1


def test_500_fails_as_server_error_after_max_attempts(serve, session) -> None:
    server = serve()
    result = Fetcher(session, FAST).fetch([f"{server.url}/_fault/status/500/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts) == (Reason.HTTP_SERVER_ERROR, 500, 3)
    assert "after 3 attempts" in result.detail and len(records(server, 3)) == 3


def test_a_hanging_server_times_out_after_max_attempts(serve, session) -> None:
    server = serve(hang_seconds=1)
    policy = FetchPolicy(read_timeout=0.3, max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
    started = time.monotonic()
    result = Fetcher(session, policy).fetch([f"{server.url}/_fault/hang/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts) == (Reason.TIMEOUT, 0, 2)
    assert 0.6 <= time.monotonic() - started < 1.5


def test_html_is_not_an_image(serve, session) -> None:
    result = Fetcher(session, FAST).fetch([f"{serve().url}/_fault/html/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts) == (Reason.NOT_AN_IMAGE, 200, 1)
    assert "text/html" in result.content_type


def test_an_oversize_body_is_refused_and_the_connection_closed_early(serve, session) -> None:
    server = serve()
    result = Fetcher(session, FetchPolicy(max_bytes=1024 * 1024)).fetch([f"{server.url}/_fault/oversize/data/a.jpg"])
    assert (result.reason, result.attempts) == (Reason.TOO_LARGE, 1) and "exceeds --max-bytes 1048576" in result.detail
    [record] = records(server, 1)
    assert record.bytes_sent < OVERSIZE_BYTES  # the server's writes failed once the client hung up


def test_a_redirect_to_another_scheme_is_refused(serve, session) -> None:
    result = Fetcher(session, FAST).fetch([f"{serve().url}/_fault/redirect-file/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts) == (Reason.REDIRECT_REFUSED, 302, 1)
    assert "file:///etc/passwd" in result.detail


def test_an_http_redirect_is_followed(serve, session, images: Path) -> None:
    server = serve("redirect=1")
    result = Fetcher(session, FAST).fetch([f"{server.url}/data/b.jpg"])
    assert (result.ok, result.url, result.data, result.attempts) == (True, f"{server.url}/data/b.jpg", JPEG + b"b", 1)
    assert [(r.path, r.status) for r in records(server, 2)] == [("/data/b.jpg", 302), ("/data/b.jpg?redirected=1", 200)]


def test_too_many_redirects_are_refused() -> None:
    hops = FakeSession(lambda url: FakeResponse(302, {"Location": url + "x"}, iter([b""])))
    result = Fetcher(hops, FAST).fetch(["http://h/a"])
    assert (result.reason, len(hops.calls)) == (Reason.REDIRECT_REFUSED, FAST.max_redirects + 1)


def test_429_honours_retry_after_between_attempts(serve, session) -> None:
    server = serve("429=1:1")
    policy = FetchPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=5)
    result = Fetcher(session, policy).fetch([f"{server.url}/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts) == (Reason.HTTP_RATE_LIMITED, 429, 2)
    first, second = records(server, 2)
    assert second.time - first.time >= 1.0


def test_resets_fail_as_connection_errors_after_the_retries(serve, session) -> None:
    server = serve("reset=1")
    result = Fetcher(session, FAST).fetch([f"{server.url}/data/a.jpg"])
    assert (result.reason, result.http_status, result.attempts) == (Reason.CONNECTION_ERROR, 0, 3)
    assert len(records(server, 3)) == 3


def test_a_truncated_body_is_a_connection_error(serve, session) -> None:
    result = Fetcher(session, FAST).fetch([f"{serve('truncate=1').url}/data/a.jpg"])
    assert (result.reason, result.attempts) == (Reason.CONNECTION_ERROR, 3) and "truncated" in result.detail


def test_a_host_that_refuses_half_the_time_is_eventually_fetched(serve, session) -> None:
    server = serve("429=0.5:0")
    fetcher = Fetcher(session, FetchPolicy(rate=100, max_attempts=12, backoff_base=0.01, backoff_cap=0.05))
    results = [fetcher.fetch([f"{server.url}/data/{name}.jpg"]) for name in "abc"]
    assert [result.data for result in results] == [JPEG + name.encode() for name in "abc"]
    assert sum(result.attempts for result in results) > 3  # some were refused first
    assert sum(record.status == 429 for record in records(server, 4)) > 0


def test_falls_back_to_the_medium_source_url_when_the_full_size_url_404s(serve, session) -> None:
    server = serve()
    full, medium = f"{server.url}/_fault/status/404/data/c.jpg", f"{server.url}/data/c.jpg"
    result = Fetcher(session, FAST).fetch([full, medium])
    assert (result.ok, result.url, result.data, result.attempts) == (True, medium, JPEG + b"c", 2)
    assert "http_not_found" in result.detail and full in result.detail


def test_when_both_urls_fail_the_full_size_urls_reason_is_kept(serve, session) -> None:
    server = serve()
    full, medium = f"{server.url}/_fault/html/data/c.jpg", f"{server.url}/data/missing.jpg"
    result = Fetcher(session, FAST).fetch([full, medium])
    assert (result.ok, result.url, result.reason, result.attempts) == (False, full, Reason.NOT_AN_IMAGE, 2)
    assert "not_an_image" in result.detail and "http_not_found" in result.detail and medium in result.detail
