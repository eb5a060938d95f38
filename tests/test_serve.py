"""``edgeport-demo serve`` (mobile_demo/serve.py) facing a hostile network.

Every case starts the server as users do, a real subprocess on a free loopback port,
and attacks it over real sockets: links out of the export, a foreign ``Host``, idle and
half-sent connections (with and without TLS), clients that reset mid-download, Ctrl-C
and SIGTERM with ``--https``, and bad ``--port``/``--host`` values. The export is a small
folder written here (the server reads only its manifest and serves bytes; the pages
running real exports are tests/test_web.py's).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeport.mobile_demo.serve import (
    MAX_CONNECTIONS,
    find_node_modules,
    phone_hints,
    start_server,
)

BIN = Path(sys.executable).parent
_NO_VERIFY = ssl._create_unverified_context()  # the certificate is self-signed


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A run folder with an export: manifest (holding the run's absolute path), two models."""
    run = tmp_path_factory.mktemp("serve") / "run"
    export = run / "export"
    export.mkdir(parents=True)
    (run / "saved_model").mkdir()
    (run / "saved_model" / "saved_model.pb").write_bytes(b"the run's graph, not for phones")
    manifest = {"format_version": 1, "run": str(run), "labels": [str(i) for i in range(10)],
                "input": {"size": 28},
                "artifacts": [{"file": "model.onnx", "format": "onnx", "precision": "float32"},
                              {"file": "model_int8.tflite", "format": "tflite"}]}
    (export / "manifest.json").write_text(json.dumps(manifest))
    (export / "model.onnx").write_bytes(os.urandom(4096))
    (export / "model_int8.tflite").write_bytes(os.urandom(2048))
    (export / "labels.txt").write_text("\n".join(manifest["labels"]) + "\n")
    return export


class _Server:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url
        self.port = int(url.rstrip("/").rsplit(":", 1)[1])
        self.https = url.startswith("https")
        self.stderr = ""

    def connect(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=_NO_VERIFY)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, host: str | None = None, timeout: float = 5.0):
        """(status, body) of ``GET path`` with ``Host: host`` (default ``localhost:PORT``)."""
        conn = self.connect(timeout)
        try:
            conn.putrequest("GET", path, skip_host=True)
            conn.putheader("Host", f"localhost:{self.port}" if host is None else host)
            conn.endheaders()
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()


@contextlib.contextmanager
def _serve(export: Path, *extra: str, env: dict | None = None, stop=signal.SIGTERM):
    proc = subprocess.Popen(
        [str(BIN / "edgeport-demo"), "serve", str(export), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    server = None
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving "), first + proc.stderr.read()
        server = _Server(proc, first.split(" at ")[-1].strip())
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(stop)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if server is not None:
            server.stderr = err


def _modules_with_links(tmp: Path, secret: Path) -> Path:
    """A copy of the runtimes' two entry files, plus links out of the tree."""
    real = find_node_modules()
    mods = tmp / "node_modules"
    for rel in ("@litertjs/core/dist/index.js", "onnxruntime-web/dist/ort.wasm.min.mjs"):
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / rel, mods / rel)
    (mods / "onnxruntime-web/dist/secret.mjs").symlink_to(secret)
    (mods / "@litertjs/wasm-utils").mkdir(parents=True)
    (mods / "@litertjs/wasm-utils/dist").symlink_to("/etc", target_is_directory=True)
    return mods


def test_links_out_of_the_export_are_never_served(tmp_path, export_dir):
    run = tmp_path / "run"
    shutil.copytree(export_dir.parent, run)
    export = run / "export"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me\n")
    secret.chmod(0o600)
    (export / "labels.txt").unlink()
    (export / "labels.txt").symlink_to(secret)
    (export / "model_int8.tflite").unlink()
    (export / "model_int8.tflite").symlink_to("/etc/passwd")
    (export / "model.onnx").unlink()
    (export / "model.onnx").symlink_to(run / "saved_model" / "saved_model.pb")
    mods = _modules_with_links(tmp_path, secret)
    with _serve(export, env={"EDGEPORT_WEB_MODULES": str(mods)}) as s:
        for path in ("/models/labels.txt", "/models/model_int8.tflite", "/models/model.onnx",
                     "/vendor/ort/secret.mjs", "/vendor/litertjs/wasm-utils/passwd",
                     "/models/golden.npz", "/models/../../saved_model/saved_model.pb",
                     "/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs"):
            status, body = s.get(path)
            assert status == 404, path
            assert b"do not serve" not in body and b"root:" not in body and b"graph" not in body
        assert s.get("/models/manifest.json")[0] == 200  # the regular files still are
        assert s.get("/vendor/ort/ort.wasm.min.mjs")[0] == 200
        assert s.get("/")[0] == 200


def test_a_linked_manifest_is_refused_at_start(tmp_path, export_dir):
    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    (tmp_path / "elsewhere.json").write_bytes((export / "manifest.json").read_bytes())
    (export / "manifest.json").unlink()
    (export / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    out = subprocess.run([str(BIN / "edgeport-demo"), "serve", str(export), "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "manifest.json: a link" in line and "fix:" in line


def test_manifest_is_served_without_machine_paths(export_dir):
    with _serve(export_dir) as s:
        status, body = s.get("/models/manifest.json")
    assert status == 200
    doc = json.loads(body)
    assert "run" not in doc and str(export_dir.parent) not in body.decode()
    assert [a["file"] for a in doc["artifacts"]] == ["model.onnx", "model_int8.tflite"]
    assert doc["labels"] == [str(i) for i in range(10)]


def test_only_its_own_host_names_are_answered(export_dir):
    with _serve(export_dir) as s:
        for host in ("evil.example", f"evil.example:{s.port}", "127.0.0.1.evil.example",
                     "192.168.1.66", ""):
            status, body = s.get("/", host=host)
            assert status == 421, host
            assert len(body) < 300 and b"not this server" in body
        for host in (f"localhost:{s.port}", f"127.0.0.1:{s.port}", f"[::1]:{s.port}",
                     "LOCALHOST"):
            assert s.get("/", host=host)[0] == 200, host


def test_an_idle_tls_connection_does_not_block_another_client(export_dir):
    with _serve(export_dir, "--https") as s:
        idle = socket.create_connection(("127.0.0.1", s.port))  # never sends a ClientHello
        try:
            status, body = s.get("/models/manifest.json", timeout=5)
            assert status == 200 and json.loads(body)["artifacts"]
        finally:
            idle.close()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a client that drops off the network."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_reset_print_no_traceback(export_dir):
    with _serve(export_dir, "--https") as s:
        for _ in range(5):
            raw = socket.create_connection(("127.0.0.1", s.port))
            tls = _NO_VERIFY.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(f"GET /vendor/ort/ort-wasm-simd-threaded.wasm HTTP/1.1\r\n"
                        f"Host: localhost:{s.port}\r\n\r\n".encode())
            assert tls.recv(100).startswith(b"HTTP/1.1 200")  # a download of several MB
            _reset(tls)
            _reset(socket.create_connection(("127.0.0.1", s.port)))  # reset mid-handshake
            bad = socket.create_connection(("127.0.0.1", s.port))
            bad.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP to the TLS port
            bad.close()
        assert s.get("/")[0] == 200
    assert "Traceback" not in s.stderr
    assert s.stderr.strip().splitlines() == [
        "edgeport-demo serve: terminated (SIGTERM); nothing half-written was left behind"]


def _attack(port: int, idle: int, half: int) -> list[socket.socket]:
    """``idle`` connections that send nothing and ``half`` that send half a request."""
    socks = []
    for i in range(idle + half):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i >= idle:
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: local")
        socks.append(sock)
    return socks


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_soak_idle_and_half_sent_connections_do_not_stop_service(export_dir, https):
    """200 idle + 200 half-sent connections, 6x the cap: real requests are still answered
    at once while they stay open, and after they all close; no traceback, bounded time."""
    extra = ("--https",) if https else ()
    with _serve(export_dir, *extra) as s:
        socks = _attack(s.port, idle=200, half=200)
        assert len(socks) > 4 * MAX_CONNECTIONS
        try:
            for path in ("/", "/models/manifest.json", "/vendor/ort/ort.wasm.min.mjs"):
                assert s.get(path, timeout=5)[0] == 200  # answered within 5 s, or it raises
        finally:
            for sock in socks:
                sock.close()
        for _ in range(20):
            assert s.get("/models/model.onnx", timeout=5)[0] == 200
    assert "Traceback" not in s.stderr and len(s.stderr.splitlines()) == 1, s.stderr


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_https_key_folder_is_gone_on_every_exit(tmp_path, export_dir, stop, code):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with _serve(export_dir, "--https", env={"TMPDIR": str(tmp)}, stop=stop) as s:
        assert s.get("/")[0] == 200
        assert list(tmp.iterdir()) == []  # the key is in memory only, once loaded
    assert s.proc.returncode == code
    assert list(tmp.iterdir()) == []
    assert "nothing half-written was left behind" in s.stderr


@pytest.mark.parametrize("args, flag", [
    (["--port", "70000"], "--port 70000"),
    (["--port", "-1"], "--port -1"),
    (["--port", "eighty"], "--port eighty"),
    (["--host", "999.1.1.1"], "--host 999.1.1.1"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
])
def test_bad_port_or_host_is_one_line_and_exit_2(export_dir, args, flag):
    out = subprocess.run([str(BIN / "edgeport-demo"), "serve", str(export_dir), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"edgeport-demo serve: error: {flag}:") and "fix:" in line
    if "--host" in args:
        assert "another --port" not in line and "--host 127.0.0.1" in line


def test_a_run_folder_suggests_its_export(export_dir):
    out = subprocess.run([str(BIN / "edgeport-demo"), "serve", str(export_dir.parent)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert f"did you mean `edgeport-demo serve {export_dir}`" in line
    assert "edgeport export" not in line.split("fix:")[1]


def test_phone_hints_show_a_qr_code_only_for_an_address_a_phone_can_open(export_dir):
    server = start_server(export_dir, port=0)
    try:
        port = server.httpd.server_address[1]
        local = "\n".join(phone_hints(server, https=False))
        assert "█" not in local  # a QR code of localhost would open the phone itself
        assert "--host 0.0.0.0 --https" in local
        assert f"adb reverse tcp:{port} tcp:{port}" in local and "PORT" not in local
        lan = type(server)(url=server.url, lan_urls=[f"https://192.168.1.20:{port}/"],
                           httpd=server.httpd)
        text = "\n".join(phone_hints(lan, https=True))
        assert "█" in text and f"https://192.168.1.20:{port}/" in text and "adb" not in text
    finally:
        server.close()


def test_at_the_cap_a_slow_download_gives_way_after_the_grace(export_dir, monkeypatch):
    """Clients that request a big file and never read hold their slots for TRANSFER_GRACE
    only: then a new client takes the oldest one's place (cap 2 and grace 3 s here)."""
    from edgeport.mobile_demo import serve

    monkeypatch.setattr(serve, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(serve, "TRANSFER_GRACE", 3.0)
    server = start_server(export_dir, port=0)
    port = server.httpd.server_address[1]
    slow = []
    try:
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET /vendor/ort/ort-wasm-simd-threaded.wasm HTTP/1.1\r\n"
                         f"Host: localhost:{port}\r\n\r\n".encode())
            slow.append(sock)
        deadline = time.monotonic() + 10
        while not (len(server.httpd._open) == 2
                   and not any(c.waiting for c in server.httpd._open)):
            assert time.monotonic() < deadline, "the two downloads did not start"
            time.sleep(0.05)
        # Without the grace both slots stay held until IDLE_TIMEOUT (10 s), and a new
        # client is closed at once; with it, the oldest download gives way.
        time.sleep(3.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/", headers={"Host": f"localhost:{port}"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        for sock in slow:
            sock.close()
        server.close()
