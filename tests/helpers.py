"""Test helpers: serving the Bento for real, and making images of every awkward kind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SESSION_STARTED = time.time()
# Clients drop idle connections before the server does (uvicorn: 5 s; httpx's default is
# the same 5 s): otherwise a request now and then goes out on a connection the server is
# closing at that instant, and is lost to a reset.
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2)
SERVED: dict[str, subprocess.Popen] = {}  # base URL -> its `bentoml serve` process
SERVED_STARTS: list[str] = []  # each served_bento's target, for the session summary


def listening_port(process: subprocess.Popen, timeout: float = 120, in_children: bool = False) -> int:
    """The port of a server started on port 0, once it listens.

    The kernel picks the port at bind and the server holds it from then on: a port found
    free, closed and handed over (bind-close-rebind) could be taken in between. With
    ``in_children``, only the children's sockets count: `bentoml serve`'s arbiter also
    listens on circus's own ports, and only its workers share the HTTP socket.
    """
    import psutil

    root = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}")
        ports: set[int] = set()
        with contextlib.suppress(psutil.Error):
            for proc in root.children(recursive=True) if in_children else [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    ports |= {c.laddr.port for c in proc.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        if len(ports) == 1:
            return ports.pop()
        time.sleep(0.05)
    raise TimeoutError(f"{process.args[:4]} did not listen in {timeout}s")


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses connections for the block: bound, never listening, so held."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def released_port() -> int:
    """A port the kernel handed out and this process let go. Only for an address that
    servers take in turn (the sidecar's, in the fault tests: killed, hung, restarted);
    a server that keeps its port starts on port 0 instead (``listening_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_bento(
    home: Path,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    store: Path | None = None,
    target: str = "service:Gateway",
    command: list[str] | None = None,
) -> Iterator[str]:
    """`bentoml serve <target>` on a free port; yields the base URL once /readyz is 200.

    ``target`` is the service (default) or a built Bento's tag. ``command`` replaces
    ``-m bentoml serve <target>`` (the Python arguments before ``--port``).

    Each server gets its own BENTOML_HOME (with the project's model store linked
    in, or ``store``): every `bentoml serve` wipes $BENTOML_HOME/prometheus_multiproc_dir at
    start, which would reset the metrics of any other server sharing the home.
    """
    store = store or Path(os.environ["BENTOML_HOME"]) / "models"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(store, target_is_directory=True)
    log_path = home / "serve.log"
    server_env = {**os.environ, "BENTOML_HOME": str(home), **(env or {})}
    server_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # bentoml serve sets its own
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *(command or ["-m", "bentoml", "serve", target]), "--port", "0", "--host", "127.0.0.1"],
            cwd=ROOT,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = ""
    SERVED_STARTS.append(os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0])
    try:
        try:
            url = f"http://127.0.0.1:{listening_port(process, timeout, in_children=True)}"
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}:\n{log_path.read_text()[-4000:]}") from None
        SERVED[url] = process
        wait_ready(url, process, log_path, timeout)
        yield url
    finally:
        SERVED.pop(url, None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def k8s_deployment(name: str) -> dict:
    """The Deployment in docker/k8s/<name>.yaml, as the cluster gets it."""
    import yaml

    for doc in yaml.safe_load_all((ROOT / "docker" / "k8s" / f"{name}.yaml").read_text()):
        if doc and doc["kind"] == "Deployment":
            return doc
    raise AssertionError(f"no Deployment in {name}.yaml")


def k8s_container(name: str) -> dict:
    return k8s_deployment(name)["spec"]["template"]["spec"]["containers"][0]


def start_command(args: list[str]) -> list[str]:
    """``served_bento``'s command for a container's arguments: the image's entry point runs
    `python -m bentoml_cli._internal.start <args> <bento>`; here the bento is the checkout,
    and served_bento appends --port and --host (the last --port wins)."""
    return ["-m", "bentoml_cli._internal.start", *args, "."]


@contextlib.contextmanager
def configured_gateway(**env: str):
    """The Gateway in-process (``Gateway.to_asgi()``) under these environment variables.

    Service instances and the middlewares (tikka/http/stack.py) read the settings when
    they are built, so a configuration needs no process of its own. What the class
    declarations hold (model tag, timeout, batching) stays as imported. One gateway per
    process is what BentoML serves: the mounted app's state is the last one built's.
    """
    from starlette.testclient import TestClient

    from service import Gateway
    from tikka.settings import get_settings

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    get_settings.cache_clear()
    forget_bentoml_metrics()
    try:
        with TestClient(Gateway.to_asgi()) as client:
            yield client
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def forget_bentoml_metrics() -> None:
    """BentoML registers its request metrics once per app it builds, in the process's
    default registry, and a second build in one process fails (DuplicateTimeseries). Its
    metrics live in the multiprocess files, so dropping the registrations loses nothing."""
    from prometheus_client import REGISTRY

    for collector, names in list(REGISTRY._collector_to_names.items()):
        if any(name.startswith("bentoml_") for name in names):
            REGISTRY.unregister(collector)


def worker_rss(url: str) -> dict[str, int]:
    """RSS in bytes of each process under a served Bento's supervisor, by role and pid."""
    import psutil

    def role(process: psutil.Process) -> str:
        cmdline = " ".join(process.cmdline())
        for name in ("classifier", "tikka"):
            if f"service-name {name}" in cmdline or f"service_name={name}" in cmdline:
                return name
        return "worker" if "worker" in cmdline else process.name()

    children = psutil.Process(SERVED[url].pid).children(recursive=True)
    return {f"{role(p)}:{p.pid}": p.memory_info().rss for p in children if p.is_running()}


def worker_usage(url: str) -> dict[str, tuple[float, int]]:
    """CPU seconds and peak RSS (bytes) of each worker of a served Bento, by role and pid,
    then each worker's peak reset (Linux: /proc/PID/clear_refs 5, VmHWM back to the
    current RSS), so that the next call sees the peak of what ran in between."""
    import psutil

    usage = {}
    for name, _ in worker_rss(url).items():
        pid = int(name.rsplit(":", 1)[1])
        with contextlib.suppress(psutil.Error, OSError):
            times = psutil.Process(pid).cpu_times()
            status = Path(f"/proc/{pid}/status").read_text()
            peak = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024
            usage[name] = (times.user + times.system, peak)
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    return usage


def wait_ready(
    url: str, process: subprocess.Popen, log_path: Path | None, timeout: float, path: str = "/readyz"
) -> None:
    """Poll ``url + path`` until it answers 200; fail early, with the log, if the process exits."""

    def log() -> str:
        return log_path.read_text()[-4000:] if log_path else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}:\n{log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url}{path} not ready in {timeout}s:\n{log()}")


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? ([^ ]+)$", line)
        if not match or match.group(1) != name:
            continue
        sample_labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(match.group(4))
    return total


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_image(name: str = "pizza.jpg") -> Image.Image:
    return Image.open(ROOT / "tests" / "data" / name).convert("RGB")


def rgba_png(photo: Image.Image) -> bytes:
    """The photo with a fully transparent top quarter whose stored colour is black."""
    rgba = photo.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, rgba.width, rgba.height // 4))
    return encode(rgba, "PNG")


def sixteen_bit_png(width: int = 64, height: int = 48, value: int = 40000) -> bytes:
    return encode(Image.new("I;16", (width, height), value), "PNG")


def exif_rotated_jpeg(photo: Image.Image, orientation: int = 6) -> bytes:
    """Pixels stored sideways, with the EXIF tag that says how to turn them upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo.rotate(90, expand=True), "JPEG", exif=exif.tobytes(), quality=92)


def two_frame_gif(first=(255, 0, 0), second=(0, 0, 255)) -> bytes:
    frames = [Image.new("RGB", (40, 30), first), Image.new("RGB", (40, 30), second)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def pixel_bomb_png(width: int, height: int) -> bytes:
    """A tiny file that decodes to width*height pixels (a decompression bomb)."""
    return encode(Image.new("1", (width, height), 0), "PNG", optimize=True)


def progressive_jpeg_bomb(side: int, scans: int = 90, quality: int = 5) -> bytes:
    """A side x side progressive JPEG whose scans are repeated up to ``scans``: each scan
    revisits every block, so the decode costs ~scans/10 times a photo of its size. Noise
    at 1/8 scale, upscaled: incompressible enough that the scans are not trivial."""
    import numpy as np

    noise = np.random.default_rng(side).integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    photo = encode(
        Image.fromarray(noise).resize((side, side), Image.Resampling.BILINEAR),
        "JPEG",
        progressive=True,
        quality=quality,
    )
    first_scan = photo.index(b"\xff\xda")
    return photo[:first_scan] + photo[first_scan:-2] * (scans // photo.count(b"\xff\xda")) + b"\xff\xd9"


def png_text_bomb() -> bytes:
    """A tiny PNG whose compressed text chunk inflates past PIL's 1 MB limit."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "0" * (3 * 1024 * 1024), zip=True)
    return encode(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)


def truncated_jpeg(photo_bytes: bytes) -> bytes:
    return photo_bytes[: len(photo_bytes) // 3]


def bad_uploads(max_bytes: int, max_pixels: int, photo_bytes: bytes) -> list[tuple[str, dict, int, str]]:
    """Every kind of bad request: (id, httpx request kwargs, expected status, expected error code)."""
    side = int(max_pixels**0.5) + 10
    return [
        ("missing-field", {"files": {"file": ("p.jpg", photo_bytes, "image/jpeg")}}, 422, "missing_field"),
        ("text-field-only", {"files": {"other": (None, "x")}}, 422, "missing_field"),
        ("empty-file", {"files": {"image": ("e.jpg", b"", "image/jpeg")}}, 400, "empty_upload"),
        (
            "not-an-image",
            {"files": {"image": ("x.jpg", b"%PDF-1.7 not a photo" * 20, "image/jpeg")}},
            400,
            "not_an_image",
        ),
        (
            "truncated-jpeg",
            {"files": {"image": ("t.jpg", truncated_jpeg(photo_bytes), "image/jpeg")}},
            400,
            "not_an_image",
        ),
        (
            "tiff-not-accepted",
            {"files": {"image": ("t.tif", encode(photo_image(), "TIFF"), "image/tiff")}},
            400,
            "not_an_image",
        ),
        ("declared-text", {"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415, "unsupported_media_type"),
        (
            "declared-pdf",
            {"files": {"image": ("a.pdf", photo_bytes, "application/pdf")}},
            415,
            "unsupported_media_type",
        ),
        ("json-body", {"json": {"image": "https://example.com/pizza.jpg"}}, 415, "unsupported_media_type"),
        ("url-in-file-field", {"files": {"image": (None, "http://127.0.0.1:9/pizza.jpg")}}, 400, "not_a_file"),
        (
            "file-in-another-field",
            {
                "files": {
                    "image": ("p.jpg", photo_bytes, "image/jpeg"),
                    "notes": ("n.bin", b"\xff\xfe\x00", "application/octet-stream"),
                }
            },
            400,
            "unexpected_field",
        ),
        (
            "multipart-without-boundary",
            {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "malformed_form",
        ),
        (
            "multipart-garbage",
            {"content": b"not a multipart body", "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
            400,
            "malformed_form",
        ),
        (
            "part-without-content-disposition",
            {
                "content": b"--xyz\r\nContent-Type: image/jpeg\r\n\r\nabc\r\n--xyz--\r\n",
                "headers": {"Content-Type": "multipart/form-data; boundary=xyz"},
            },
            400,
            "malformed_form",
        ),
        ("png-text-chunk-bomb", {"files": {"image": ("t.png", png_text_bomb(), "image/png")}}, 413, "image_too_large"),
        (
            "two-images",
            {
                "files": [
                    ("image", ("a.jpg", photo_bytes, "image/jpeg")),
                    ("image", ("b.jpg", photo_bytes, "image/jpeg")),
                ]
            },
            400,
            "too_many_files",
        ),
        (
            "body-over-limit",
            {"files": {"image": ("big.jpg", photo_bytes + b"\0" * max_bytes, "image/jpeg")}},
            413,
            "upload_too_large",
        ),
        (
            "pixel-bomb",
            {"files": {"image": ("bomb.png", pixel_bomb_png(side, side), "image/png")}},
            413,
            "image_too_large",
        ),
    ]


@contextlib.contextmanager
def gcs_emulator(data_dir: Path) -> Iterator[str]:
    """The gcp-storage-emulator on a port of its own, storing objects on disk under ``data_dir``.

    On disk rather than in memory so that tests can corrupt an object's bytes
    behind the emulator's back, as bit rot would, while its metadata keeps the
    original checksums.
    """
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--quiet",
        ],
        cwd=data_dir,
        env={**os.environ, "STORAGE_BASE": str(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{listening_port(process, 30)}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/storage/v1/b", timeout=1)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the GCS emulator did not start")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


class SidecarProcess:
    """The real embedded sidecar (`python -m sidecar`), startable and killable.

    Without ``port`` it starts on port 0; a restart takes the port its first start got.
    """

    def __init__(self, port: int | None = None, model_name: str | None = None):
        self.port = port or 0
        self.model_name = model_name
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> SidecarProcess:
        args = [sys.executable, "-m", "sidecar", "--port", str(self.port), "--threads", "1", "--context-size", "1024"]
        if self.model_name:
            args += ["--model-name", self.model_name]
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.port = listening_port(self.process, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sidecar exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url, timeout=1).text == "Ollama is running":
                    return self
            time.sleep(0.2)
        raise TimeoutError("the sidecar did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None


class HungServer:
    """Accepts TCP connections on a port and never answers: a sidecar stuck mid-request."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []

    def __enter__(self) -> HungServer:
        import threading

        self.sock.listen(64)

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connection, _ = self.sock.accept()
                    self.connections.append(connection)

        threading.Thread(target=accept, daemon=True).start()
        return self

    def wait_for_connections(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.connections) < count:
            assert time.monotonic() < deadline, f"{len(self.connections)} of {count} connections came"
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        for connection in self.connections:
            connection.close()
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the
        # kernel's listening socket open under it, and the next server could not bind.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class GarbageOllama:
    """An HTTP server on the sidecar's port that answers Ollama's routes with garbage.

    A stand-in, because neither Ollama nor the sidecar can be made to send these on
    demand: ``mode`` is one of "invalid-json" (200, not JSON), "html-error" (a 502
    HTML page, as a proxy in front of Ollama sends), "wrong-content-type" (200
    text/html), "garbage-mid-stream" (two good NDJSON records, then junk).
    """

    def __init__(self, port: int, mode: str):
        self.port, self.mode = port, mode

    def __enter__(self) -> GarbageOllama:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        mode = self.mode

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = self.rfile.read(length) if length else b""
                if mode == "html-error":
                    self.answer(502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>")
                elif mode == "wrong-content-type":
                    self.answer(200, "text/html", b"<!doctype html><title>Welcome to nginx!</title>")
                elif mode == "garbage-mid-stream" and json.loads(request or b"{}").get("stream"):
                    good = b'{"model":"gemma3:270m","response":"Pizza","done":false}\n' * 2
                    self.answer(200, "application/x-ndjson", good + b"\x00\xffnot json at all\n")
                else:  # invalid-json, and garbage-mid-stream's non-streaming calls
                    self.answer(200, "application/json", b"{this is not json")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def phone_photo(fmt: str, photo: Image.Image | None = None, orientation: int = 6) -> bytes:
    """A HEIC ("HEIF") or AVIF as phones save them: pixels stored sideways, with the EXIF tag
    that says how to turn them upright (pillow-heif writes it as the file's own rotation)."""
    from tikka.model.formats import register_openers

    register_openers()
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode((photo or photo_image()).rotate(90, expand=True), fmt, exif=exif.tobytes(), quality=90)


def flat_bomb(fmt: str, width: int, height: int) -> bytes:
    """One colour over width x height pixels: a few KB of HEIC or AVIF (a decompression bomb)."""
    from tikka.model.formats import register_openers

    register_openers()
    return encode(Image.new("RGB", (width, height), (200, 40, 30)), fmt, quality=30)
