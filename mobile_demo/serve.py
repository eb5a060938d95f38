"""edgeport-demo serve RUN/export [--host 127.0.0.1] [--port 8000] [--https]

Serve the phone page (``mobile_demo/web/``) with one export's models, so a phone's
browser runs the exported files itself (LiteRT.js for the app models, onnxruntime-web
for ``model.onnx``)::

    edgeport-demo serve runs/quickstart/export                       # http://127.0.0.1:8000/
    edgeport-demo serve runs/quickstart/export --host 0.0.0.0 --https  # a phone on the Wi-Fi

The page is static: ``/`` is ``mobile_demo/web/``, ``/models/`` holds the export's
``manifest.json`` (without the run's absolute path), ``labels.txt`` and the model files
the manifest lists (nothing else of the folder), and ``/vendor/`` the runtimes'
JavaScript and ``.wasm`` files, read from the ``node_modules`` that ``npm ci`` installed
(``mobile_demo/web/node_modules``, or ``$EDGEPORT_WEB_MODULES``): nothing is fetched
from a CDN. Browsers allow the camera only in a secure context (``https://`` or
``http://localhost``); ``--https`` makes a self-signed certificate (the phone asks once
to accept it). Only the standard library, plus ``segno`` for the terminal QR code and
``cryptography`` for ``--https`` (both in the ``[web]`` extra).

What the server guarantees (it may face a whole Wi-Fi with ``--host 0.0.0.0``):

- only regular files under those three folders, opened without following links
  (``O_NOFOLLOW`` on every path component): a link anywhere is a 404, never its target;
- only requests whose ``Host`` is an address it printed (``localhost``, ``127.0.0.1``,
  ``[::1]``, the ``--host`` it bound, the LAN address it prints for ``0.0.0.0``):
  anything else gets 421 (DNS rebinding);
- at most :data:`MAX_CONNECTIONS` connections, each in its own thread with socket
  timeouts (:data:`HANDSHAKE_TIMEOUT` for the TLS handshake, which runs in that
  thread, :data:`IDLE_TIMEOUT` per read or write); a connection over the cap closes
  the oldest one still waiting for its request, else the oldest download older than
  :data:`TRANSFER_GRACE`, else it is closed. A client that disconnects or times out prints nothing;
- the ``--https`` key lives in a temporary folder only while it is loaded, then the
  folder is removed (before the first request), whatever way the server stops.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import io
import ipaddress
import json
import mimetypes
import os
import re
import shutil
import socket
import socketserver
import ssl
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edgeport.errors import EdgeportError, run_cli

__all__ = ["HANDSHAKE_TIMEOUT", "IDLE_TIMEOUT", "MAX_CONNECTIONS", "TRANSFER_GRACE", "WEB_DIR",
           "DemoServer", "ServeError", "find_node_modules", "main", "start_server"]

PROG = "edgeport-demo serve"
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_CONNECTIONS = 64  # open connections (= handler threads); a phone's page uses about 6
HANDSHAKE_TIMEOUT = 5.0  # seconds for a TLS ClientHello and handshake
IDLE_TIMEOUT = 10.0  # seconds a read or write may wait (a request's bytes, a slow download)
TRANSFER_GRACE = 10.0  # at the cap, a download this old may be closed for a new client
_MANIFEST = "manifest.json"
_EXTRA_MODEL_FILES = ("manifest.json", "labels.txt")  # the page needs nothing else
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# URL prefix -> folder inside node_modules. Only these trees are served from node_modules.
_VENDOR = {
    "litertjs/core/": "@litertjs/core/dist/",
    "litertjs/wasm-utils/": "@litertjs/wasm-utils/dist/",
    "litertjs/wasm/": "@litertjs/core/wasm/",
    "ort/": "onnxruntime-web/dist/",
}
# LiteRT.js imports its helper by a bare name; a worker has no import map, so the
# server points the import at the served copy (the only rewrite it makes).
_BARE_IMPORT = ('"@litertjs/wasm-utils"', '"/vendor/litertjs/wasm-utils/index.js"')
_LITERT_INDEX = ("@litertjs", "core", "dist", "index.js")
_FAVICON = "/favicon.svg"  # /favicon.ico redirects here
_QUIET = (OSError, ssl.SSLError, TimeoutError)  # client gone, reset, timed out, bad TLS


class ServeError(EdgeportError, ValueError):
    """The folder is not an export, the runtimes are not installed, or the address is unusable."""


def find_node_modules(web_dir: Path = WEB_DIR) -> Path:
    """The ``node_modules`` folder holding LiteRT.js and onnxruntime-web.

    ``$EDGEPORT_WEB_MODULES`` wins; else ``web_dir/node_modules`` (what ``npm ci`` in
    ``mobile_demo/web`` creates).

    Raises:
        ServeError: the runtimes are not installed there, with the command that installs them.
    """
    env = os.environ.get("EDGEPORT_WEB_MODULES")
    root = Path(env) if env else web_dir / "node_modules"
    missing = [p for p in ("@litertjs/core/dist/index.js", "onnxruntime-web/dist/ort.wasm.min.mjs")
               if not (root / p).is_file()]
    if missing:
        raise ServeError(
            f"{root}: the browser runtimes are not installed (missing {', '.join(missing)}); "
            f"expected the packages of {web_dir / 'package.json'}; "
            f"fix: run `npm ci --prefix {web_dir}` (or set EDGEPORT_WEB_MODULES)"
        )
    return root.resolve()


def _open_regular(root: Path, parts: Sequence[str]) -> int:
    """A read-only descriptor of the regular file ``root/parts...``, following no link.

    ``root`` itself was resolved at start-up; every component below it is opened with
    ``O_NOFOLLOW`` relative to its parent's descriptor, so a link (or a folder, a FIFO,
    a device) anywhere raises ``OSError`` instead of reaching outside ``root``.
    """
    if not parts or any(p in ("", ".", "..") or "/" in p or "\\" in p or "\0" in p
                        for p in parts):
        raise FileNotFoundError(errno.ENOENT, "not served", "/".join(parts))
    if not (hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd):
        return _open_regular_checked(root, parts)  # Windows: lstat every component
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for name in parts[:-1]:
            sub = os.open(name, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        # O_NONBLOCK: a FIFO planted in the folder must not hang the thread on open.
        file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", "/".join(parts))
    os.set_blocking(file_fd, True)
    return file_fd


def _open_regular_checked(root: Path, parts: Sequence[str]) -> int:
    """:func:`_open_regular` where ``O_NOFOLLOW``/``dir_fd`` are missing (Windows)."""
    path = root
    for name in parts:
        path = path / name
        if path.is_symlink() or (name != parts[-1] and not path.is_dir()):
            raise FileNotFoundError(errno.ENOENT, "a link", str(path))
    if not stat.S_ISREG(os.lstat(path).st_mode) or root not in path.resolve().parents:
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))


def _read_regular(root: Path, parts: Sequence[str]) -> bytes:
    with os.fdopen(_open_regular(root, parts), "rb") as f:
        return f.read()


_ABS_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def _public_manifest(doc: Any) -> Any:
    """``doc`` without machine paths: every string value that is an absolute path is dropped."""
    if isinstance(doc, dict):
        return {k: _public_manifest(v) for k, v in doc.items()
                if not (isinstance(v, str) and _ABS_PATH.match(v))}
    if isinstance(doc, list):
        return [_public_manifest(v) for v in doc if not (isinstance(v, str) and _ABS_PATH.match(v))]
    return doc


def _check_export(export_dir: Path, given: str | os.PathLike[str] | None = None) -> list[str]:
    """The model files the page may load (from the manifest); raises if not an export."""
    shown = Path(given) if given is not None else export_dir
    expected = "an export folder (RUN/export) holding manifest.json from `edgeport export`"
    if not export_dir.is_dir():
        raise ServeError(f"{shown}: not a folder; expected {expected}")
    if (export_dir / _MANIFEST).is_symlink():
        raise ServeError(
            f"{shown / _MANIFEST}: a link; expected a regular file (serve follows no "
            "links); fix: re-run `edgeport export RUN --force`"
        )
    try:
        doc = json.loads(_read_regular(export_dir, [_MANIFEST]).decode("utf-8"))
        files = [str(a["file"]) for a in doc["artifacts"]]
    except FileNotFoundError:
        if (export_dir / "export" / _MANIFEST).is_file():
            raise ServeError(
                f"{shown}: a run folder, not its export; expected {expected}; "
                f"fix: did you mean `{PROG} {shown / 'export'}`?"
            ) from None
        raise ServeError(
            f"{shown}: no manifest.json; expected {expected}; "
            "fix: run `edgeport export RUN` and serve RUN/export"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ServeError(
            f"{shown / _MANIFEST}: not an edgeport manifest ({type(e).__name__}); "
            f"expected {expected}; fix: re-run `edgeport export RUN --force`"
        ) from None
    return [f for f in files if "/" not in f and "\\" not in f and f not in ("", ".", "..")]


def _host_name(header: str | None) -> str:
    """The host of a ``Host`` header, lower case, without port or IPv6 brackets."""
    value = (header or "").strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Handler(BaseHTTPRequestHandler):
    """Static files from three roots; everything else is 404."""

    server_version = "edgeport-demo"
    protocol_version = "HTTP/1.1"  # keep-alive: the page loads a dozen files
    timeout = IDLE_TIMEOUT
    server: _PageServer

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("EDGEPORT_SERVE_LOG"):
            super().log_message(format, *args)

    def handle(self) -> None:
        with contextlib.suppress(*_QUIET):
            super().handle()

    def handle_one_request(self) -> None:
        self.server.set_waiting(True)  # an idle keep-alive connection may be closed for another
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self.server.set_waiting(False)
        host = _host_name(self.headers.get("Host"))
        if host not in self.server.allowed_hosts:
            body = (f"{PROG}: Host {self.headers.get('Host')!r} is not this server "
                    f"(DNS rebinding?); open {self.server.url}\n").encode()
            self.close_connection = True
            self.send_response(HTTPStatus.MISDIRECTED_REQUEST)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return False
        return True

    def end_headers(self) -> None:
        # The page must always see the export it was started with (the service worker
        # keeps its own copy for offline use).
        self.send_header("Cache-Control", "no-cache")
        # Cross-origin isolation: every file is same-origin anyway, and it gives the
        # worker a 5 us clock instead of 100 us for the latency it shows.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def do_GET(self) -> None:
        body = self._send_head()
        if body is not None:
            with body:
                shutil.copyfileobj(body, self.wfile)

    def do_HEAD(self) -> None:
        body = self._send_head()
        if body is not None:
            body.close()

    def _target(self) -> tuple[Path, list[str]] | None:
        """The (root, path parts) a URL maps to, or None (404)."""
        url = unquote(urlsplit(self.path).path)
        if url == "/":
            url = "/index.html"
        parts = [p for p in url.split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        if parts[0] == "models" and len(parts) == 2:
            name = parts[1]
            if name in self.server.model_files or name in _EXTRA_MODEL_FILES:
                return self.server.export_dir, [name]
            return None
        if parts[0] == "vendor":
            rest = "/".join(parts[1:])
            for prefix, folder in _VENDOR.items():
                if rest.startswith(prefix) and len(rest) > len(prefix):
                    return (self.server.node_modules,
                            folder.strip("/").split("/") + rest[len(prefix):].split("/"))
            return None
        if len(parts) == 1 and parts[0] != "node_modules" and not parts[0].startswith("."):
            return self.server.web_dir, parts
        return None

    def _send_head(self) -> io.BufferedIOBase | None:
        if urlsplit(self.path).path == "/favicon.ico":  # browsers ask for it unprompted
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", _FAVICON)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        target = self._target()
        try:
            if target is None:
                raise FileNotFoundError(self.path)
            root, parts = target
            fd = _open_regular(root, parts)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return None
        f = os.fdopen(fd, "rb")
        body: io.BufferedIOBase = f
        length = os.fstat(fd).st_size
        if root == self.server.export_dir and parts == [_MANIFEST]:
            with f:
                try:
                    doc = _public_manifest(json.loads(f.read().decode("utf-8")))
                except ValueError:
                    self.send_error(HTTPStatus.NOT_FOUND, "not found")
                    return None
            data = json.dumps(doc, indent=1).encode()
            body, length = io.BytesIO(data), len(data)
        elif root == self.server.node_modules and tuple(parts) == _LITERT_INDEX:
            with f:
                data = f.read().decode("utf-8").replace(*_BARE_IMPORT).encode()
            body, length = io.BytesIO(data), len(data)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self._type(parts[-1]))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        return body

    @staticmethod
    def _type(name: str) -> str:
        suffix = Path(name).suffix
        types = {".wasm": "application/wasm", ".mjs": "text/javascript",
                 ".js": "text/javascript", ".tflite": "application/octet-stream",
                 ".onnx": "application/octet-stream", ".webmanifest": "application/manifest+json",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8",
                 ".svg": "image/svg+xml"}
        return types.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class _Conn:
    """One open connection: its socket (plain, then TLS) and whether it waits for a request."""

    __slots__ = ("since", "sock", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.waiting, self.since = sock, True, time.monotonic()


class _PageServer(socketserver.TCPServer):
    """A TCP server with one thread per connection, at most :data:`MAX_CONNECTIONS`.

    The accepting thread only accepts: TLS handshakes and requests run in the
    connection's thread, under socket timeouts.
    """

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[Any, ...], family: int, *, web_dir: Path,
                 export_dir: Path, node_modules: Path, model_files: frozenset[str],
                 ssl_context: ssl.SSLContext | None) -> None:
        self.address_family = family
        self.web_dir, self.export_dir, self.node_modules = web_dir, export_dir, node_modules
        self.model_files = model_files
        self.ssl_context = ssl_context
        self.allowed_hosts: frozenset[str] = frozenset(_LOOPBACK_NAMES)
        self.url = ""
        self._lock = threading.Lock()
        self._open: dict[_Conn, None] = {}  # insertion order = age
        self._local = threading.local()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = _Conn(request)
        with self._lock:
            if len(self._open) >= MAX_CONNECTIONS:
                # The oldest connection waiting for a request (idle, half-sent); else the
                # oldest download if it is older than TRANSFER_GRACE (a slow reader), so
                # no set of held connections can lock clients out for good.
                oldest = next((c for c in self._open if c.waiting), None)
                if oldest is None:
                    first = next(iter(self._open))
                    if time.monotonic() - first.since >= TRANSFER_GRACE:
                        oldest = first
                if oldest is None:  # every slot is a recent download: refuse the newcomer
                    self.shutdown_request(request)
                    return
                self._drop(oldest)
            self._open[conn] = None
        threading.Thread(target=self._serve_connection, args=(conn, client_address),
                         daemon=True).start()

    def _drop(self, conn: _Conn) -> None:
        """Close ``conn`` from another thread (its thread sees EOF and ends). Holds the lock."""
        self._open.pop(conn, None)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)

    def set_waiting(self, waiting: bool) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.waiting = waiting

    def _serve_connection(self, conn: _Conn, client_address: Any) -> None:
        self._local.conn = conn
        try:
            conn.sock.settimeout(HANDSHAKE_TIMEOUT)
            if self.ssl_context is not None:
                with self._lock:
                    if conn not in self._open:
                        return
                    conn.sock = self.ssl_context.wrap_socket(
                        conn.sock, server_side=True, do_handshake_on_connect=False)
                conn.sock.do_handshake()
            self.finish_request(conn.sock, client_address)
        except _QUIET:
            pass
        except Exception as e:  # a bug: one line, never a traceback per connection
            print(f"{PROG}: internal error on a request from {client_address[0]}: "
                  f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            with self._lock:
                self._open.pop(conn, None)
            self.shutdown_request(conn.sock)

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(*_QUIET):
            request.shutdown(socket.SHUT_WR)
        with contextlib.suppress(*_QUIET):
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Nothing: a client that goes away is not news (``EDGEPORT_SERVE_LOG`` logs requests)."""

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            for conn in list(self._open):
                self._drop(conn)


@dataclass(frozen=True)
class DemoServer:
    """A running page server (see :func:`start_server`).

    Attributes:
        url: the address to open on this machine.
        lan_urls: the addresses a phone on the same network can open.
        httpd: the underlying server (``httpd.shutdown()`` stops it).
    """

    url: str
    lan_urls: list[str]
    httpd: socketserver.TCPServer

    def close(self) -> None:
        """Stop serving, close every open connection and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()


def _port(value: int | str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise ServeError(f"--port {value}: not a TCP port; expected a number from 0 to 65535 "
                         "(0 picks a free one); fix: pass --port 8000 or --port 0")
    return port


def _address(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(address family, socket address) to bind ``host``; raises a one-line error."""
    bad = (f"--host {host}: not an address this machine can listen on; expected one of its "
           "IP addresses or names (127.0.0.1: this machine only; 0.0.0.0: every network, "
           "for a phone); fix: pass --host 127.0.0.1 or --host 0.0.0.0")
    if not host or re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ServeError(bad.replace("not an address", "not a valid IPv4 address", 1)) from None
    try:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (OSError, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ServeError(bad.replace("listen on;", f"listen on ({reason});", 1)) from None
    family, _, _, _, address = info[0]
    return family, address


def _allowed_hosts(host: str, address: tuple[Any, ...], lan: Sequence[str]) -> frozenset[str]:
    names = {*_LOOPBACK_NAMES, host.lower(), str(address[0]).lower(), *lan}
    return frozenset(names - {"0.0.0.0", "::", ""})


def start_server(
    export_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    https: bool = False,
    background: bool = True,
) -> DemoServer:
    """Serve the page for ``export_dir``.

    Args:
        export_dir: an export folder (``RUN/export``) with ``manifest.json``.
        host: the address to listen on (``0.0.0.0`` for every network interface).
        port: the TCP port (0 picks a free one).
        https: serve over TLS with a fresh self-signed certificate.
        background: serve from a daemon thread and return at once; else the caller
            runs ``server.httpd.serve_forever()``.

    Returns:
        The running server with its URLs.

    Raises:
        ServeError: not an export folder, runtimes not installed, a port outside
            0-65535, a host this machine cannot listen on, or the port is taken.
    """
    given = export_dir
    export_dir = Path(export_dir).resolve()
    model_files = _check_export(export_dir, given)
    node_modules = find_node_modules()
    port = _port(port)
    family, address = _address(host, port)
    wildcard = host in ("0.0.0.0", "::") or address[0] in ("0.0.0.0", "::")
    lan_ips = _lan_addresses() if wildcard else []
    ctx = None
    if https:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load_self_signed_cert(ctx, lan_ips or ([] if _is_loopback(host) else [host]))
    try:
        httpd = _PageServer(address, family, web_dir=WEB_DIR, export_dir=export_dir,
                            node_modules=node_modules, model_files=frozenset(model_files),
                            ssl_context=ctx)
    except OverflowError:
        raise ServeError(f"--port {port}: not a TCP port; expected 0-65535; "
                         "fix: pass --port 8000 or --port 0") from None
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, "")
        if name == "EADDRINUSE":
            why = "the port is taken; expected a free port; fix: pass another --port (0 picks one)"
        elif name == "EACCES":
            why = ("ports below 1024 need root; expected a port above 1023; "
                   "fix: pass --port 8000 (or 0 to pick a free one)")
        else:
            why = ("not an address of this machine; expected one of its IP addresses; "
                   "fix: pass --host 127.0.0.1 (this machine) or --host 0.0.0.0 (a phone)")
        raise ServeError(f"{host}:{port}: cannot listen ({e.strerror or e}); {why}") from None
    scheme = "https" if https else "http"
    real_port = httpd.server_address[1]
    if wildcard or _is_loopback(host):
        shown = "localhost"
        lan = [f"{scheme}://{ip}:{real_port}/" for ip in lan_ips]
    else:
        shown = f"[{host}]" if ":" in host else host
        lan = [f"{scheme}://{shown}:{real_port}/"]
    httpd.url = f"{scheme}://{shown}:{real_port}/"
    httpd.allowed_hosts = _allowed_hosts(host, address, lan_ips)
    server = DemoServer(url=httpd.url, lan_urls=lan, httpd=httpd)
    if background:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return server


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _lan_addresses() -> list[str]:
    """This machine's IPv4 address on the network a phone would share (best effort)."""
    found: list[str] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
            found.append(s.getsockname()[0])
    except OSError:
        pass
    return [a for a in found if not a.startswith("127.")]


def _load_self_signed_cert(ctx: ssl.SSLContext, names: Sequence[str]) -> None:
    """Load a fresh self-signed certificate for localhost and ``names`` into ``ctx``.

    The key exists on disk only while ``ctx`` loads it (``ssl`` reads files only): the
    temporary folder is removed before this returns, whatever happens.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeport-demo")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for a in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            alt.append(x509.DNSName(a))
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="edgeport-demo-tls-"))  # mode 0700
    try:
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
        ctx.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def qr_text(url: str) -> str:
    """``url`` as a QR code drawn with block characters for a terminal ('' without segno)."""
    try:
        import segno
    except ImportError:
        return ""
    buf = io.StringIO()
    segno.make(url, error="m").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def phone_hints(server: DemoServer, *, https: bool) -> list[str]:
    """What to print after the ``serving ...`` line: how a phone reaches the page.

    A QR code only for an address a phone can open (never a ``localhost`` one).
    """
    port = server.httpd.server_address[1]
    lines = [f"on a phone (same Wi-Fi): {url}" for url in server.lan_urls]
    if server.lan_urls:
        qr = qr_text(server.lan_urls[0])
        if qr:
            lines.append(qr)
        if not https:
            lines.append("the phone's camera needs HTTPS off localhost: add --https "
                         "(drawing works without)")
    else:
        lines.append(
            f"a phone cannot open {server.url} (this machine only): restart with "
            "--host 0.0.0.0 --https and scan the QR code it prints (the camera needs "
            f"HTTPS off localhost); or over USB: `adb reverse tcp:{port} tcp:{port}`, "
            f"then open http://localhost:{port}/ on the phone"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The ``edgeport-demo serve`` argument parser."""
    p = argparse.ArgumentParser(prog=PROG, description="Serve the phone page for an export.")
    p.add_argument("export_dir", metavar="RUN/export", help="an export folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: reachable from a phone on the network)")
    # A string: _port() says what is wrong in one line (argparse would print its usage).
    p.add_argument("--port", default="8000",
                   help="TCP port, 0-65535 (8000; 0 picks a free one)")
    p.add_argument("--https", action="store_true",
                   help="TLS with a self-signed certificate (the camera needs it off localhost)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _serve(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    server = start_server(args.export_dir, host=args.host, port=_port(args.port),
                          https=args.https, background=False)
    say(f"serving {Path(args.export_dir).resolve()} at {server.url}")
    for line in phone_hints(server, https=args.https):
        say(line)
    say("press Ctrl+C to stop")
    try:
        server.httpd.serve_forever()
    finally:
        server.httpd.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``edgeport-demo serve``; returns the exit code (0, 2 bad input, 130 Ctrl+C)."""
    args = build_parser().parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    return run_cli(PROG, lambda: _serve(args, say), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
