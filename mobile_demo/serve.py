"""edgeport-demo serve RUN/export [--host 127.0.0.1] [--port 8000] [--https]

Serve the phone page (``mobile_demo/web/``) with one export's models, so a phone's
browser runs the exported files itself (LiteRT.js for the app models, onnxruntime-web
for ``model.onnx``)::

    edgeport-demo serve runs/quickstart/export                       # http://127.0.0.1:8000/
    edgeport-demo serve runs/quickstart/export --host 0.0.0.0 --https  # a phone on the Wi-Fi

The page is static: ``/`` is ``mobile_demo/web/``, ``/models/`` holds the export's
``manifest.json``, ``labels.txt`` and the model files the manifest lists (nothing else
of the folder), and ``/vendor/`` the runtimes' JavaScript and ``.wasm`` files, read
from the ``node_modules`` that ``npm ci`` installed (``mobile_demo/web/node_modules``,
or ``$EDGEPORT_WEB_MODULES``): nothing is fetched from a CDN. Browsers allow the camera
only in a secure context (``https://`` or ``http://localhost``); ``--https`` makes a
self-signed certificate (the phone asks once to accept it). Only the standard
library, plus ``segno`` for the terminal QR code and ``cryptography`` for ``--https``
(both in the ``[web]`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import ipaddress
import json
import mimetypes
import os
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edgeport.errors import EdgeportError, run_cli

__all__ = ["WEB_DIR", "DemoServer", "ServeError", "find_node_modules", "main", "start_server"]

PROG = "edgeport-demo serve"
WEB_DIR = Path(__file__).resolve().parent / "web"
_MANIFEST = "manifest.json"
_EXTRA_MODEL_FILES = ("manifest.json", "labels.txt", "golden.npz")
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


class ServeError(EdgeportError, ValueError):
    """The folder is not an export, the runtimes are not installed, or the port is taken."""


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
    return root


def _check_export(export_dir: Path) -> list[str]:
    """The model files the page may load (from the manifest); raises if not an export."""
    manifest = export_dir / _MANIFEST
    expected = "an export folder (RUN/export) holding manifest.json from `edgeport export`"
    if not export_dir.is_dir():
        raise ServeError(f"{export_dir}: not a folder; expected {expected}")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        files = [str(a["file"]) for a in doc["artifacts"]]
    except FileNotFoundError:
        raise ServeError(
            f"{export_dir}: no manifest.json; expected {expected}; "
            "fix: run `edgeport export RUN` and serve RUN/export"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ServeError(
            f"{manifest}: not an edgeport manifest ({type(e).__name__}); expected {expected}; "
            "fix: re-run `edgeport export RUN --force`"
        ) from None
    return [f for f in files if "/" not in f and f not in ("", ".", "..")]


class _Handler(SimpleHTTPRequestHandler):
    """Static files from three roots; everything else is 404."""

    server_version = "edgeport-demo"
    web_dir: Path
    export_dir: Path
    node_modules: Path
    model_files: frozenset[str]

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("EDGEPORT_SERVE_LOG"):
            super().log_message(format, *args)

    def end_headers(self) -> None:
        # The page must always see the export it was started with (the service worker
        # keeps its own copy for offline use).
        self.send_header("Cache-Control", "no-cache")
        # Cross-origin isolation: every file is same-origin anyway, and it gives the
        # worker a 5 us clock instead of 100 us for the latency it shows.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        url = unquote(urlsplit(path).path)
        if url == "/":
            url = "/index.html"
        parts = [p for p in url.split("/") if p]
        if any(p in (".", "..") or "\\" in p for p in parts):
            return ""
        rel = "/".join(parts)
        if rel.startswith("models/") and len(parts) == 2:
            name = parts[1]
            if name in self.model_files or name in _EXTRA_MODEL_FILES:
                return str(self.export_dir / name)
            return ""
        if rel.startswith("vendor/"):
            rest = rel[len("vendor/"):]
            for prefix, folder in _VENDOR.items():
                if rest.startswith(prefix):
                    return str(self.node_modules / folder / rest[len(prefix):])
            return ""
        if len(parts) == 1 and parts[0] != "node_modules" and not parts[0].startswith("."):
            return str(self.web_dir / parts[0])
        return ""

    def send_head(self):  # type: ignore[no-untyped-def]
        path = self.translate_path(self.path)
        if not path or not Path(path).is_file():
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return None
        if Path(path) == self.node_modules / "@litertjs/core/dist/index.js":
            body = Path(path).read_text(encoding="utf-8").replace(*_BARE_IMPORT).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return io.BytesIO(body)
        return super().send_head()

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        suffix = Path(path).suffix
        types = {".wasm": "application/wasm", ".mjs": "text/javascript",
                 ".js": "text/javascript", ".tflite": "application/octet-stream",
                 ".onnx": "application/octet-stream", ".webmanifest": "application/manifest+json"}
        return types.get(suffix) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"


@dataclass
class DemoServer:
    """A running page server (see :func:`start_server`).

    Attributes:
        url: the address to open on this machine.
        lan_urls: the addresses a phone on the same network can open.
        httpd: the underlying server (``httpd.shutdown()`` stops it).
    """

    url: str
    lan_urls: list[str]
    httpd: ThreadingHTTPServer

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()


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
        ServeError: not an export folder, runtimes not installed, or the port is taken.
    """
    export_dir = Path(export_dir).resolve()
    model_files = _check_export(export_dir)
    handler = type("Handler", (_Handler,), {
        "web_dir": WEB_DIR, "export_dir": export_dir, "node_modules": find_node_modules(),
        "model_files": frozenset(model_files),
    })
    try:
        httpd = ThreadingHTTPServer((host, port), functools.partial(handler))
    except OSError as e:
        raise ServeError(
            f"{host}:{port}: cannot listen ({e.strerror or e}); expected a free port; "
            "fix: pass another --port (0 picks a free one)"
        ) from None
    httpd.daemon_threads = True
    scheme = "https" if https else "http"
    if https:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*_self_signed_cert(_lan_addresses()))
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    real_port = httpd.server_address[1]
    shown = "localhost" if host in ("127.0.0.1", "localhost", "::1") else host
    if host in ("0.0.0.0", "::"):
        shown = "localhost"
        lan = [f"{scheme}://{ip}:{real_port}/" for ip in _lan_addresses()]
    else:
        lan = [] if shown == "localhost" else [f"{scheme}://{host}:{real_port}/"]
    server = DemoServer(url=f"{scheme}://{shown}:{real_port}/", lan_urls=lan, httpd=httpd)
    if background:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return server


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


def _self_signed_cert(addresses: Sequence[str]) -> tuple[str, str]:
    """A fresh self-signed certificate for localhost and ``addresses``: (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeport-demo")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="edgeport-demo-tls-"))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)


def qr_text(url: str) -> str:
    """``url`` as a QR code drawn with block characters for a terminal ('' without segno)."""
    try:
        import segno
    except ImportError:
        return ""
    buf = io.StringIO()
    segno.make(url, error="m").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def build_parser() -> argparse.ArgumentParser:
    """The ``edgeport-demo serve`` argument parser."""
    p = argparse.ArgumentParser(prog=PROG, description="Serve the phone page for an export.")
    p.add_argument("export_dir", metavar="RUN/export", help="an export folder")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: reachable from a phone on the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (8000; 0 picks a free one)")
    p.add_argument("--https", action="store_true",
                   help="TLS with a self-signed certificate (the camera needs it off localhost)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _serve(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    server = start_server(args.export_dir, host=args.host, port=args.port, https=args.https,
                          background=False)
    target = server.lan_urls[0] if server.lan_urls else server.url
    say(f"serving {Path(args.export_dir).resolve()} at {server.url}")
    for url in server.lan_urls:
        say(f"on a phone (same Wi-Fi): {url}")
    qr = qr_text(target)
    if qr:
        say(qr)
    if not server.lan_urls:
        say("from a phone: restart with --host 0.0.0.0 --https and scan the QR code "
            "(the camera needs HTTPS off localhost; or use `adb reverse tcp:PORT tcp:PORT`)")
    elif not args.https:
        say("the phone's camera needs HTTPS off localhost: add --https (drawing works without)")
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
