"""Tests for `tol serve-kit`: static files, fixed-fate fault endpoints, seeded random faults, the request log."""

from __future__ import annotations

import dataclasses
import json
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from pipeline import cli
from pipeline.serve_kit import FAULT_NAMES, OVERSIZE_BYTES, FaultRule, FaultSpec, KitServer, RequestRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = {"img/a.jpg": b"\xff\xd8\xff\xe0jpeg-bytes", "b.png": b"\x89PNG\r\n\x1a\npng-bytes", "c.gif": b"GIF89a-gif"}
TYPES = {"img/a.jpg": "image/jpeg", "b.png": "image/png", "c.gif": "image/gif"}
SECRET = b"outside the served directory"


@pytest.fixture
def kit_dir(tmp_path: Path) -> Path:
    root = tmp_path / "kit"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return root


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.trust_env = False  # ignore any *_PROXY variables: traffic must stay on 127.0.0.1
        yield client


@pytest.fixture
def serve(kit_dir: Path) -> Iterator[Callable[..., KitServer]]:
    """Start KitServers on `kit_dir` (faults given as spec text) and stop them all after the test."""
    servers: list[KitServer] = []

    def start(spec: str = "", **kwargs: object) -> KitServer:
        servers.append(KitServer(kit_dir, faults=FaultSpec.parse(spec), **kwargs).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def raw_request(server: KitServer, path: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    """Send one request byte-for-byte (no client-side path normalisation) and read until the server closes."""
    with socket.create_connection(server.server_address, timeout=timeout) as conn:
        conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def wait_for_records(server: KitServer, count: int, timeout: float = 5.0) -> list[RequestRecord]:
    """The log once it holds `count` records; handlers log after the response, so a client can finish first."""
    deadline = time.monotonic() + timeout
    while len(records := server.requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(records) == count, records
    return records


# Static files


@pytest.mark.parametrize("name", sorted(FILES))
def test_static_file_is_served_byte_for_byte_with_its_type(serve, session, name: str) -> None:
    server = serve()
    response = session.get(f"{server.url}/{name}", timeout=5)
    assert response.status_code == 200
    assert response.content == FILES[name]
    assert response.headers["Content-Type"] == TYPES[name]
    assert response.headers["Content-Length"] == str(len(FILES[name]))
    assert response.headers["Server"] == "treeoflife-serve-kit/0.1"


def test_head_sends_headers_without_body(serve, session) -> None:
    server = serve()
    response = session.head(f"{server.url}/img/a.jpg", timeout=5)
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["Content-Length"] == str(len(FILES["img/a.jpg"]))


def test_keep_alive_serves_two_requests_on_one_connection(serve) -> None:
    server = serve()
    two = b"GET /c.gif HTTP/1.1\r\nHost: x\r\n\r\nGET /c.gif HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(server.server_address, timeout=5) as conn:
        conn.sendall(two)
        raw = b"".join(iter(lambda: conn.recv(65536), b""))
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.count(FILES["c.gif"]) == 2


def test_missing_file_is_404(serve, session) -> None:
    server = serve()
    assert session.get(f"{server.url}/img/nope.jpg", timeout=5).status_code == 404
    assert session.get(f"{server.url}/img", timeout=5).status_code == 404  # a directory is not a file


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/img/../../secret.txt", "/%2e%2e/secret.txt", "/img/%2E%2E/%2e%2e/secret.txt",
     "/..%2fsecret.txt", "/%2e%2e%5csecret.txt", "//etc/passwd", "/%2fetc/passwd", "/link.txt"],
)
def test_paths_escaping_the_root_are_404(serve, kit_dir: Path, path: str) -> None:
    (kit_dir / "link.txt").symlink_to(kit_dir.parent / "secret.txt")
    status, _, body = split_response(raw_request(serve(), path))
    assert status == 404
    assert SECRET not in body


# Fixed-fate endpoints under /_fault/


@pytest.mark.parametrize("code", [404, 410, 500])
def test_status_endpoint_sends_that_status(serve, session, code: int) -> None:
    server = serve()
    response = session.get(f"{server.url}/_fault/status/{code}/some/image.jpg", timeout=5)
    assert response.status_code == code
    assert response.text == f"injected status {code}\n"


def test_hang_endpoint_stays_silent_without_blocking_others(serve, session) -> None:
    server = serve(hang_seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"{server.url}/_fault/hang/x.jpg", timeout=0.2)
    # While that handler still hangs, other requests are served.
    assert session.get(f"{server.url}/c.gif", timeout=5).content == FILES["c.gif"]
    started = time.monotonic()
    assert raw_request(server, "/_fault/hang/y.jpg") == b""  # silence, then a close
    assert time.monotonic() - started >= 0.45
    hang_records = [record for record in wait_for_records(server, 3) if record.fault == "hang"]
    assert [(record.status, record.bytes_sent) for record in hang_records] == [(0, 0), (0, 0)]


def test_stop_is_prompt_while_a_hang_is_in_progress(serve) -> None:
    server = serve(hang_seconds=30)
    with socket.create_connection(server.server_address, timeout=5) as conn:
        conn.sendall(b"GET /_fault/hang/x HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)  # let the handler start hanging
        started = time.monotonic()
        server.stop()
        assert conn.recv(1024) == b""  # the hanging handler noticed the stop and closed
    assert time.monotonic() - started < 2


def test_html_endpoint_is_a_200_html_page(serve, session) -> None:
    response = session.get(f"{serve().url}/_fault/html/x.jpg", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.text.startswith("<!doctype html>")


def test_redirect_file_endpoint_points_at_a_local_file(serve, session) -> None:
    url = f"{serve().url}/_fault/redirect-file/x.jpg"
    response = session.get(url, timeout=5, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == "file:///etc/passwd"
    with pytest.raises(requests.exceptions.InvalidSchema):  # a client following it must refuse the scheme
        session.get(url, timeout=5)


def test_oversize_endpoint_lets_a_bounded_client_stop_early(serve, session) -> None:
    server = serve()
    with session.get(f"{server.url}/_fault/oversize/x.jpg", timeout=5, stream=True) as response:
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.headers["Content-Length"] == str(OVERSIZE_BYTES)
        first = next(response.iter_content(1024 * 1024))
        assert first.startswith(b"\xff\xd8")
    # The handler sees the closed connection, stops quietly and logs what it managed to send.
    [record] = wait_for_records(server, 1)
    assert (record.status, record.fault) == (200, "oversize")
    assert 0 < record.bytes_sent < OVERSIZE_BYTES
    assert session.get(f"{server.url}/c.gif", timeout=5).status_code == 200  # the server is still fine


def test_unknown_fault_endpoint_is_404(serve, session) -> None:
    assert session.get(f"{serve().url}/_fault/explode/x.jpg", timeout=5).status_code == 404


# Random faults from the spec, each forced with probability 1


@pytest.mark.parametrize(("spec", "retry_after"), [("429=1", "1"), ("429=1:3", "3"), ("429=1:0.2", "1")])
def test_429_fault_sends_retry_after(serve, session, spec: str, retry_after: str) -> None:
    response = session.get(f"{serve(spec).url}/img/a.jpg", timeout=5)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == retry_after


def test_503_fault_sends_retry_after_only_when_given(serve, session) -> None:
    plain = session.get(f"{serve('503=1').url}/img/a.jpg", timeout=5)
    assert plain.status_code == 503
    assert "Retry-After" not in plain.headers
    assert session.get(f"{serve('503=1:7').url}/img/a.jpg", timeout=5).headers["Retry-After"] == "7"


def test_reset_fault_resets_the_connection(serve, session) -> None:
    server = serve("reset=1")
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{server.url}/img/a.jpg", timeout=5)
    with socket.create_connection(server.server_address, timeout=5) as conn:
        conn.sendall(b"GET /img/a.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):  # RST, not an orderly close
            conn.recv(1024)
    assert [(record.status, record.fault) for record in wait_for_records(server, 2)] == [(0, "reset")] * 2


def test_truncate_fault_sends_half_the_declared_body(serve, session) -> None:
    server = serve("truncate=1")
    data = FILES["img/a.jpg"]
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        session.get(f"{server.url}/img/a.jpg", timeout=5)
    status, headers, body = split_response(raw_request(server, "/img/a.jpg"))
    assert (status, headers["Content-Length"], body) == (200, str(len(data)), data[: len(data) // 2])


def test_latency_fault_delays_then_serves(serve, session) -> None:
    server = serve("latency=1:0.3")
    started = time.monotonic()
    response = session.get(f"{server.url}/c.gif", timeout=5)
    assert time.monotonic() - started >= 0.3
    assert response.content == FILES["c.gif"]
    assert [(record.status, record.fault) for record in wait_for_records(server, 1)] == [(200, "latency")]


def test_html_fault_answers_an_image_url_with_html(serve, session) -> None:
    response = session.get(f"{serve('html=1').url}/img/a.jpg", timeout=5)
    assert (response.status_code, response.headers["Content-Type"]) == (200, "text/html; charset=utf-8")


def test_redirect_fault_is_followed_and_served_clean(serve, session) -> None:
    server = serve("redirect=1,429=1")  # the redirect fires first; its target must not draw the 429
    response = session.get(f"{server.url}/img/a.jpg", timeout=5)
    assert [hop.status_code for hop in response.history] == [302]
    assert response.url == f"{server.url}/img/a.jpg?redirected=1"
    assert (response.status_code, response.content) == (200, FILES["img/a.jpg"])
    log = [(record.path, record.status, record.fault) for record in wait_for_records(server, 2)]
    assert log == [("/img/a.jpg", 302, "redirect"), ("/img/a.jpg?redirected=1", 200, "")]


def test_faults_spare_endpoints_and_missing_files(serve, session) -> None:
    server = serve("429=1")
    assert session.get(f"{server.url}/_fault/status/410/x.jpg", timeout=5).status_code == 410
    assert session.get(f"{server.url}/img/nope.jpg", timeout=5).status_code == 404


# Determinism


def fault_sequence(server: KitServer, session: requests.Session, repeats: int = 6) -> dict[str, list[str]]:
    """Request every file `repeats` times; return each path's sequence of logged faults."""
    for _ in range(repeats):
        for name in sorted(FILES):
            session.get(f"{server.url}/{name}", timeout=5, allow_redirects=False)
    records = wait_for_records(server, repeats * len(FILES))
    return {f"/{name}": [record.fault for record in records if record.path == f"/{name}"] for name in FILES}


def test_same_seed_and_spec_give_the_same_per_path_faults(serve, session) -> None:
    spec = "429=0.3,503=0.3:1,html=0.2"
    first = fault_sequence(serve(spec, seed=7), session)
    assert first == fault_sequence(serve(spec, seed=7), session)
    assert first != fault_sequence(serve(spec, seed=8), session)
    # The server's draws are FaultSpec.choose's, and a retried path can succeed.
    parsed = FaultSpec.parse(spec)
    for path, faults in first.items():
        expected = [parsed.choose(7, path, attempt) for attempt in range(len(faults))]
        assert faults == [rule.name if rule else "" for rule in expected]
    assert any("" in faults and set(faults) != {""} for faults in first.values())


def test_choose_draws_each_rule_in_order_and_never_more_than_one() -> None:
    spec = FaultSpec.parse("latency=1:0.1,429=1")
    assert spec.choose(0, "/a.jpg", 0) == FaultRule("latency", 1.0, 0.1)
    assert FaultSpec().choose(0, "/a.jpg", 0) is None
    assert FaultSpec.parse("reset=0").choose(0, "/a.jpg", 0) is None


# FaultSpec.parse


def test_parse_reads_names_probabilities_and_params() -> None:
    spec = FaultSpec.parse(" 429=0.1:2 , latency=0.05,503=0.2,reset=0,truncate=1,html=0.5,redirect=0.25 ")
    assert spec.rules == (
        FaultRule("429", 0.1, 2.0), FaultRule("latency", 0.05, 0.5), FaultRule("503", 0.2, None),
        FaultRule("reset", 0.0), FaultRule("truncate", 1.0), FaultRule("html", 0.5), FaultRule("redirect", 0.25),
    )
    assert FaultSpec.parse("") == FaultSpec()


@pytest.mark.parametrize(
    ("text", "bad_item", "lists_names"),
    [("bogus=1", "bogus=1", True), ("429=0.1,bogus=0.2", "bogus=0.2", True), ("429", "429", True),
     ("429=1.5", "429=1.5", False), ("html=-0.1", "html=-0.1", False), ("latency=x", "latency=x", True),
     ("latency=0.1:soon", "latency=0.1:soon", True), ("latency=0.1:-1", "latency=0.1:-1", False),
     ("reset=1:2", "reset=1:2", False), ("html=nan", "html=nan", False)],
)
def test_parse_errors_name_the_bad_item(text: str, bad_item: str, lists_names: bool) -> None:
    with pytest.raises(ValueError) as error:
        FaultSpec.parse(text)
    assert repr(bad_item) in str(error.value)
    if lists_names:
        assert ", ".join(FAULT_NAMES) in str(error.value)


def test_parse_rejects_a_fault_listed_twice() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        FaultSpec.parse("429=0.1,429=0.2")


# Request log


def test_request_log_in_memory_and_as_json_lines(serve, session, tmp_path: Path) -> None:
    log_path = tmp_path / "requests.jsonl"
    before = time.time()
    server = serve("429=1", log_path=log_path)
    session.get(f"{server.url}/img/a.jpg", timeout=5)
    session.get(f"{server.url}/_fault/status/500/x.jpg", timeout=5)
    session.head(f"{server.url}/_fault/html/y.jpg", timeout=5)
    records = wait_for_records(server, 3)
    summary = [(r.method, r.path, r.status, r.fault, r.bytes_sent, r.client) for r in records]
    assert summary == [
        ("GET", "/img/a.jpg", 429, "429", len(b"injected 429\n"), "127.0.0.1"),
        ("GET", "/_fault/status/500/x.jpg", 500, "status", len(b"injected status 500\n"), "127.0.0.1"),
        ("HEAD", "/_fault/html/y.jpg", 200, "html", 0, "127.0.0.1"),
    ]
    assert all(before <= record.time <= time.time() for record in records)
    lines = log_path.read_text(encoding="utf-8").splitlines()  # written line by line, before stop()
    assert [json.loads(line) for line in lines] == [dataclasses.asdict(record) for record in records]
    server.requests.clear()  # a copy: the server's log is untouched
    assert len(server.requests) == 3


# Loopback only


def non_loopback_ipv4() -> str | None:
    """This machine's first IPv4 address outside 127/8, read from the interfaces (no DNS, no packets)."""
    try:
        import fcntl
    except ImportError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                return address
    return None


def test_server_binds_to_loopback_only(serve) -> None:
    server = serve()
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}"
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    # The machine's own address: the kernel answers locally, nothing leaves the host.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, server.server_address[1]), timeout=2).close()


def test_kit_server_rejects_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="nowhere"):
        KitServer(tmp_path / "nowhere")


# Command line


@pytest.fixture
def tol_argv() -> list[str]:
    """`tol` as a subprocess argv."""
    return [sys.executable, "-m", "pipeline.cli"]


def test_cli_serves_until_terminated(tol_argv: list[str], kit_dir: Path, tmp_path: Path, session) -> None:
    log_path = tmp_path / "cli.jsonl"
    argv = [*tol_argv, "serve-kit", str(kit_dir), "--port", "0", "--faults", "html=0", "--log", str(log_path)]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(argv, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True) as process:
        # A reader thread, so waiting for the URL line can time out instead of blocking on the pipe.
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True)
        reader.start()
        try:
            match = None
            while match is None:
                line = lines.get(timeout=10)
                match = re.search(rf"serving {re.escape(str(kit_dir))} at (http://127\.0\.0\.1:\d+)/", line)
            assert session.get(f"{match.group(1)}/img/a.jpg", timeout=5).content == FILES["img/a.jpg"]
        finally:
            process.terminate()  # SIGTERM: the command stops cleanly and exits 0
            returncode = process.wait(timeout=10)
            reader.join(timeout=5)
    assert returncode == 0
    assert json.loads(log_path.read_text(encoding="utf-8"))["path"] == "/img/a.jpg"


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--faults", "bogus=1"], "bogus"), (["--port", "70000"], "70000"), (["--hang-seconds", "-1"], "-1")],
)
def test_cli_rejects_bad_flags_in_one_line(tol_argv, kit_dir: Path, capsys, args: list[str], named: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve-kit", *args, str(kit_dir)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("tol serve-kit: error: argument") and named in error


def test_cli_rejects_a_missing_dir_naming_it(tol_argv, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve-kit", str(tmp_path / "no-such-kit")])
    assert exit_info.value.code == 2
    assert "no-such-kit" in capsys.readouterr().err


def test_cli_help_describes_every_flag(tol_argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve-kit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "127.0.0.1" in out
    for flag in ("DIR", "--port", "--faults", "--seed", "--log", "--hang-seconds"):
        assert flag in out
