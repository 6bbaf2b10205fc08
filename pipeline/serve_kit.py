"""Serve a directory (the sample kit's EOL images) on 127.0.0.1, with reproducible injected faults and a request log.

    tol serve-kit demo-out/kit/eol/images --port 8765 --faults "429=0.1,latency=0.05:0.5" --seed 0 --log requests.jsonl

URLs under /_fault/ have a fixed fate (status/CODE/..., hang/..., html/..., redirect-file/..., oversize/...), so a
manifest can pin a failure; --faults adds seeded random faults to static files, drawn per path and per attempt, so
a retrying client meets the same sequence on every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import mimetypes
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline import argtypes

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"  # workplace safety rule: bind to and talk to loopback only, so there is no host option
FAULT_NAMES = ("latency", "429", "503", "reset", "truncate", "html", "redirect")
PARAM_DEFAULTS = {"latency": 0.5, "429": 1.0, "503": None}  # seconds of delay / Retry-After; others take no param
OVERSIZE_BYTES, CHUNK_BYTES = 64 * 1024 * 1024, 1024 * 1024
HTML_PAGE = b"<!doctype html><html><body><h1>Service temporarily unavailable</h1></body></html>\n"
HTML_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One `name=probability[:param]` item of a fault spec."""

    name: str
    probability: float
    param: float | None = None


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Random faults for static files, drawn in the listed order; the first that fires is the request's fault."""

    rules: tuple[FaultRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse `name=P[:param],...`; raise ValueError naming the bad item and the allowed fault names."""
        rules = [_parse_rule(item.strip()) for item in text.split(",") if item.strip()]
        names = [rule.name for rule in rules]
        if len(set(names)) < len(names):
            raise ValueError(f"a fault is listed twice in {text!r}; list each of {', '.join(names)} once")
        return cls(tuple(rules))

    def choose(self, seed: int, path: str, attempt: int) -> FaultRule | None:
        """The fault for the `attempt`-th request (from 0) to `path`: the same inputs always give the same answer."""
        rng = random.Random(f"{seed}:{path}:{attempt}")
        # Draw for every rule even after one fired, so appending a rule never shifts earlier rules' draws.
        draws = [rng.random() for _ in self.rules]
        return next((rule for rule, draw in zip(self.rules, draws) if draw < rule.probability), None)


def _parse_rule(item: str) -> FaultRule:
    allowed = f"allowed faults: {', '.join(FAULT_NAMES)}, written name=probability[:param]"
    name, has_value, value = item.partition("=")
    if name.strip() not in FAULT_NAMES or not has_value:
        raise ValueError(f"unknown fault item {item!r}; {allowed}")
    name = name.strip()
    prob_text, has_param, param_text = value.partition(":")
    if has_param and name not in PARAM_DEFAULTS:
        raise ValueError(f"fault item {item!r} takes no ':param'; only {', '.join(PARAM_DEFAULTS)} do")
    try:
        probability = float(prob_text)
        param = float(param_text) if has_param else PARAM_DEFAULTS.get(name)
    except ValueError:
        raise ValueError(f"bad number in fault item {item!r}; {allowed}") from None
    if not 0.0 <= probability <= 1.0:  # also rejects nan
        raise ValueError(f"probability in fault item {item!r} is outside [0, 1]")
    if param is not None and not (math.isfinite(param) and param >= 0):
        raise ValueError(f"parameter in fault item {item!r} must be a number of seconds >= 0")
    return FaultRule(name, probability, param)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as served; `status` is 0 when no response was sent (reset, hang)."""

    time: float
    path: str
    method: str
    status: int
    fault: str
    bytes_sent: int
    client: str


def resolve_static(root: Path, url_path: str) -> Path | None:
    """The file under `root` (already resolved) named by `url_path`, or None if missing or escaping `root`."""
    parts = [part for part in unquote(url_path).split("/") if part not in ("", ".")]
    if any(part == ".." or "\\" in part or "\x00" in part for part in parts):
        return None
    candidate = root.joinpath(*parts).resolve()
    # resolve() follows symlinks, so a link pointing outside root is refused here too.
    return candidate if candidate.is_relative_to(root) and candidate.is_file() else None


class _KitHandler(BaseHTTPRequestHandler):
    server: KitServer
    protocol_version = "HTTP/1.1"
    server_version = "treeoflife-serve-kit/0.1"
    timeout = 60  # idle keep-alive connections are dropped so their threads end
    disable_nagle_algorithm = True  # headers and body go in separate writes; Nagle would add ~40 ms per response

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_GET

    def version_string(self) -> str:
        return self.server_version  # the Server header names the project, not the Python version

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        logger.debug("%s %s", self.client_address[0], format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        super().send_response(code, message)

    def _handle(self) -> None:
        self.status, self.fault, self.bytes_sent, arrived = 0, "", 0, time.time()
        url = urlsplit(self.path)
        try:
            if url.path.startswith("/_fault/"):
                self._fault_endpoint(url.path)
            else:
                self._static(url.path, redirected=url.query == "redirected=1")
        finally:
            client = self.client_address[0]
            record = RequestRecord(arrived, self.path, self.command, self.status, self.fault, self.bytes_sent, client)
            self.server.record(record)

    def _fault_endpoint(self, path: str) -> None:
        kind, _, rest = path.removeprefix("/_fault/").partition("/")
        code = rest.split("/")[0]
        self.fault = kind
        if kind == "status" and code.isdigit() and 200 <= int(code) <= 599:
            self._reply(int(code), b"" if code in ("204", "304") else f"injected status {code}\n".encode())
        elif kind == "hang":
            # The request is already read; say nothing until the client's timeout fires or the server stops.
            self.close_connection = True
            self.server.stopping.wait(self.server.hang_seconds)
        elif kind == "html":
            self._reply(200, HTML_PAGE, HTML_TYPE)
        elif kind == "redirect-file":
            self._reply(302, b"", headers={"Location": "file:///etc/passwd"})
        elif kind == "oversize":
            chunk = b"\xff\xd8\xff\xe0" + bytes(CHUNK_BYTES - 4)  # looks like a JPEG start, then zeros
            self._reply(200, (chunk for _ in range(OVERSIZE_BYTES // CHUNK_BYTES)), "image/jpeg", OVERSIZE_BYTES)
        else:
            self.fault = ""
            self._reply(404, f"no fault endpoint {path!r}; see 'tol serve-kit --help'\n".encode())

    def _static(self, path: str, redirected: bool) -> None:
        file = resolve_static(self.server.root, path)
        if file is None:
            self._reply(404, f"not found: {path}\n".encode())
            return
        # Redirect targets are served clean, so a client that follows the redirect succeeds.
        rule = None if redirected else self.server.faults.choose(self.server.seed, path, self.server.next_attempt(path))
        self.fault = rule.name if rule else ""
        body, content_type = file.read_bytes(), mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if rule is None or rule.name == "latency":
            if rule is not None:
                self.server.stopping.wait(rule.param)
            self._reply(200, body, content_type)
        elif rule.name in ("429", "503"):
            retry_after = {} if rule.param is None else {"Retry-After": str(math.ceil(rule.param))}
            self._reply(int(rule.name), f"injected {rule.name}\n".encode(), headers=retry_after)
        elif rule.name == "reset":
            # Linger on with timeout 0 makes close() send RST instead of FIN: the client sees "connection reset".
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the socket only really closes once its file wrappers are closed
            self.connection.close()
        elif rule.name == "truncate":
            self.close_connection = True
            self._reply(200, [body[: len(body) // 2]], content_type, length=len(body))
        elif rule.name == "html":
            self._reply(200, HTML_PAGE, HTML_TYPE)
        elif rule.name == "redirect":
            self._reply(302, b"", headers={"Location": f"{path}?redirected=1"})

    def _reply(self, code: int, body: bytes | Iterable[bytes], content_type: str = "text/plain; charset=utf-8",
               length: int | None = None, headers: dict[str, str] | None = None) -> None:
        """Send status, headers and, unless HEAD, the body: bytes, or chunks whose total `length` is declared."""
        self.send_response(code)
        length = len(body) if isinstance(body, bytes) else length
        for name, value in {"Content-Type": content_type, "Content-Length": str(length), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            for chunk in [body] if isinstance(body, bytes) else body:
                if self.server.stopping.is_set():
                    break
                self.wfile.write(chunk)
                self.bytes_sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading (say, a max body size did its job): fine


class KitServer(ThreadingHTTPServer):
    """The kit server, bound to 127.0.0.1 only; as a context manager it serves on a daemon thread. Port 0: any."""

    daemon_threads = True
    block_on_close = False  # stopping must not wait for a handler that is hanging on purpose

    def __init__(self, root: str | Path, port: int = 0, faults: FaultSpec = FaultSpec(), seed: int = 0,
                 log_path: str | Path | None = None, hang_seconds: float = 30.0) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"cannot serve {str(root)!r}: not a directory (pass the kit's eol/images)")
        self.faults, self.seed, self.hang_seconds = faults, seed, hang_seconds
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._records: list[RequestRecord] = []
        super().__init__((LOOPBACK, port), _KitHandler)
        self._log_file = Path(log_path).open("a", encoding="utf-8") if log_path is not None else None
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="serve-kit", daemon=True)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's name, which may query DNS: stay off the network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = LOOPBACK, self.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.server_port}"

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-response (a timeout, a size cap) is routine here, not a server error.
        if isinstance(sys.exception(), ConnectionError):
            logger.debug("client %s hung up mid-request", client_address)
        else:
            super().handle_error(request, client_address)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log so far."""
        with self._lock:
            return list(self._records)

    def next_attempt(self, path: str) -> int:
        """Count a request to `path`; return how many came before it."""
        with self._lock:
            self._attempts[path] = self._attempts.get(path, -1) + 1
            return self._attempts[path]

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
            if self._log_file is not None:
                self._log_file.write(json.dumps(asdict(record)) + "\n")
                self._log_file.flush()  # a reader tailing the log sees each request as it completes

    def start(self) -> KitServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: hangs, latency sleeps and long bodies end as soon as they notice."""
        self.stopping.set()
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> KitServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _existing_dir(text: str) -> Path:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory to serve (pass the kit's eol/images folder)")
    return Path(text)


def _fault_spec(text: str) -> FaultSpec:
    try:
        return FaultSpec.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=_existing_dir, help="directory to serve (the kit's eol/images)")
    parser.add_argument("--port", type=argtypes.port, default=8765, help="port on 127.0.0.1 (default 8765; 0: any)")
    parser.add_argument(
        "--faults", metavar="SPEC", type=_fault_spec, default=FaultSpec(),
        help=f"random faults for static files, comma-separated name=P[:param] with P in [0,1]; names: "
        f"{', '.join(FAULT_NAMES)}; latency:SECONDS (default 0.5), 429/503:RETRY_AFTER; e.g. '429=0.1:2,reset=0.05'",
    )
    parser.add_argument("--seed", metavar="N", type=argtypes.non_negative_int, default=0, help="fault seed (default 0)")
    parser.add_argument("--log", metavar="FILE", type=Path, help="append each request to FILE as a JSON line")
    parser.add_argument(
        "--hang-seconds", metavar="S", type=_seconds, default=30.0,
        help="how long /_fault/hang/ URLs stay silent before closing (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with KitServer(args.dir, args.port, args.faults, args.seed, args.log, args.hang_seconds) as server:
            logger.info("serving %s at %s/", args.dir, server.url)
            while not stop.wait(0.5):  # a timed wait keeps Ctrl-C responsive
                pass
    except KeyboardInterrupt:
        logger.debug("interrupted")  # Ctrl-C is the normal way to stop
    finally:
        signal.signal(signal.SIGTERM, previous)
    logger.info("stopped serving %s", args.dir)
    return 0

