"""The stack smoke checks (`make test-images` runs them against the local stack).

Through nginx on the real ports 80 and 443, with the Host headers of the API
(api.<domain>) and of the app (<domain>), then on the published backend and front
end ports (with a slow-POST wave on :8000), then Prometheus: the backend target is up and every Grafana panel's
query returns data after the traffic. Prints one line per check; exits 1 on a failure.

    python docker/smoke/checks.py --domain tikka.local --acme-token <name>
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import ssl
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PIZZA = ROOT / "tests" / "data" / "pizza.jpg"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "tikka.json"
results: list[tuple[bool, str, str]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((ok, name, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)


def top_label(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return None
    predictions = response.json()["predictions"]
    return max(predictions, key=predictions.get)


def pizza_photo(args) -> bytes:
    return Path(args.photo).read_bytes()


def through_nginx(args) -> None:
    api_host, app_host = f"api.{args.domain}", args.domain
    plain = httpx.Client(base_url="http://127.0.0.1", timeout=30)
    api = httpx.Client(base_url="https://127.0.0.1", headers={"Host": api_host}, verify=False, timeout=120)
    app = httpx.Client(base_url="https://127.0.0.1", headers={"Host": app_host}, verify=False, timeout=30)

    r = plain.get("/predict", headers={"Host": api_host})
    check(
        "http redirects to https",
        r.status_code == 301 and r.headers.get("location") == f"https://{api_host}/predict",
        f"{r.status_code} {r.headers.get('location')}",
    )
    r = plain.get(f"/.well-known/acme-challenge/{args.acme_token}", headers={"Host": app_host})
    check(
        "ACME challenge served over http",
        r.status_code == 200 and r.text.strip() == args.acme_token,
        str(r.status_code),
    )

    r = api.get("/health")
    check("api: /health", r.status_code == 200 and r.json().get("status") == "ok", r.text[:80])
    r = api.get("/readyz")
    check("api: /readyz", r.status_code == 200, str(r.status_code))
    photo = pizza_photo(args)
    r = api.post("/predict", files={"image": ("pizza.jpg", photo, "image/jpeg")})
    top = top_label(r)
    check("api: classifies the pizza photo", top == "pizza", f"{r.status_code} {top}")
    r = api.post("/predict/explain", files={"image": ("pizza.jpg", photo, "image/jpeg")}, data={"label": "x"})
    ok = r.status_code == 200
    if ok:
        png = Image.open(io.BytesIO(base64.b64decode(r.json()["attention_map"])))
        ok = png.format == "PNG"
    check("api: explains the pizza photo (heatmap PNG)", ok, str(r.status_code))
    r = api.get("/llm/health")
    body = r.json()
    check(
        "api: /llm/health healthy, ollama_url http://ollama:11434",
        body.get("status") == "healthy" and body.get("ollama_url") == "http://ollama:11434",
        json.dumps(body)[:120],
    )

    # NDJSON through nginx arrives line by line, not in one buffered piece.
    started = time.perf_counter()
    arrivals, lines = [], []
    with api.stream(
        "POST", "/llm/dish", json={"dish": "pizza", "task": "recipe", "stream": True, "max_tokens": 48}
    ) as r:
        for line in r.iter_lines():
            if line:
                arrivals.append(time.perf_counter() - started)
                lines.append(json.loads(line))
    done = lines[-1] if lines else {}
    # Buffered, every line arrives in the same read; streamed, nearly each at its own time.
    # (Not the spread against the total time: the first token's wait varies with the load.)
    distinct_arrivals = len({round(t, 3) for t in arrivals})
    check(
        "api: LLM answer streams unbuffered through nginx",
        r.status_code == 200
        and done.get("done") is True
        and "error" not in done
        and len(lines) > 5
        and distinct_arrivals > len(lines) // 2,
        f"{len(lines)} lines at {distinct_arrivals} distinct times, first at {arrivals[0]:.2f} s,"
        f" last at {arrivals[-1]:.2f} s"
        if arrivals
        else r.text[:80],
    )
    r = api.post("/llm/generate", json={"prompt": "Guacamole comes from", "max_tokens": 32})
    check("api: LLM answer (non-streaming)", r.status_code == 200 and r.json().get("response"), str(r.status_code))

    big = b"\xff\xd8" + b"0" * (11 * 1024 * 1024)
    r = api.post("/predict", files={"image": ("big.jpg", big, "image/jpeg")})
    check(
        "api: body over the limit is a JSON 413 at nginx",
        r.status_code == 413 and r.json().get("error") == "upload_too_large",
        f"{r.status_code} {r.text[:80]}",
    )
    r = api.post("/predict", files={"image": ("notes.txt", b"hello", "text/plain")})
    check("api: bad upload is a JSON 4xx", 400 <= r.status_code < 500 and "detail" in r.json(), str(r.status_code))

    r = api.post("/predict", content=b"garbage", headers={"Content-Type": "multipart/form-data"})
    check(
        "api: multipart without a boundary is a JSON 400",
        r.status_code == 400 and r.json().get("error") == "malformed_form",
        f"{r.status_code} {r.text[:80]}",
    )
    started = time.perf_counter()
    answer = stalled_upload("127.0.0.1", 443, api_host)
    waited = time.perf_counter() - started
    check(
        "api: nginx drops a stalled upload after its 10 s body timeout (nginx sends no 408)",
        answer == "" and 9 < waited < 25 and api.get("/readyz").status_code == 200,
        f"{waited:.1f} s {answer[:80]!r}",
    )

    r = app.get("/")
    check("app: Streamlit page", r.status_code == 200 and "<title>Streamlit</title>" in r.text, str(r.status_code))
    r = app.get("/_stcore/health")
    check("app: /_stcore/health", r.status_code == 200 and r.text == "ok", r.text[:40])
    status_line = websocket_upgrade("127.0.0.1", 443, app_host, "/_stcore/stream")
    check("app: WebSocket upgrade through nginx", status_line.startswith("HTTP/1.1 101"), status_line)


def stalled_upload(host: str, port: int, host_header: str) -> str:
    """Headers that promise 100000 bytes, then 10 arrive; what comes back before nginx closes."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host_header) as sock,
    ):
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: multipart/form-data;"
            " boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n".encode()
        )
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ssl.SSLError, ConnectionResetError):  # closed without a TLS close_notify
            pass
    return answer.decode("latin-1")


def websocket_upgrade(host: str, port: int, host_header: str, path: str) -> str:
    """The status line of a WebSocket handshake over TLS (httpx speaks no WebSocket)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        key = base64.b64encode(b"tikka-smoke-key!").decode()
        tls.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        return tls.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def published_ports(args) -> None:
    r = httpx.get("http://127.0.0.1:8000/health", timeout=10)
    check("host :8000 /health (existing clients)", r.status_code == 200, str(r.status_code))
    r = httpx.post(
        "http://127.0.0.1:8000/predict", files={"image": ("p.jpg", pizza_photo(args), "image/jpeg")}, timeout=60
    )
    check("host :8000 /predict", top_label(r) == "pizza", str(r.status_code))
    r = httpx.get("http://127.0.0.1:8501/_stcore/health", timeout=10)
    check("host :8501 Streamlit health", r.status_code == 200, str(r.status_code))


def slow_client_wave(args, connections: int = 256, gap_s: float = 5.0, seconds: float = 25.0) -> None:
    """The slow-POST attack on :8000: connections that each send headers, then one body byte
    every 5 s (under nginx's 10 s body timeout), while a normal client keeps classifying.
    nginx buffers each body whole before the backend sees it, so the trickles hold nginx's
    cheap connections, never the Bento's admission slots."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: tikka-backend\r\nContent-Type: multipart/form-data;"
        b" boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n"
    )
    trickles = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", 8000), timeout=10)
        sock.sendall(head)
        trickles.append(sock)
    photo = {"image": ("p.jpg", pizza_photo(args), "image/jpeg")}
    statuses, times = [], []
    started = last_byte = time.monotonic()
    try:
        with httpx.Client(base_url="http://127.0.0.1:8000", timeout=60) as client:
            while time.monotonic() - started < seconds:
                if time.monotonic() - last_byte > gap_s:
                    for sock in trickles:
                        sock.send(b"x")
                    last_byte = time.monotonic()
                sent = time.monotonic()
                statuses.append(client.post("/predict", files=photo).status_code)
                times.append(time.monotonic() - sent)
        held = sum(1 for sock in trickles if not answered(sock))
    finally:
        for sock in trickles:
            sock.close()
    ok = statuses.count(200) / max(1, len(statuses))
    check(
        f"host :8000 under a slow-POST wave ({connections} connections, a byte every {gap_s:g} s):"
        " normal clients >= 95% 200",
        ok >= 0.95 and held == connections,
        f"{statuses.count(200)}/{len(statuses)} x 200, median {1000 * sorted(times)[len(times) // 2]:.0f} ms;"
        f" {held} slow connections still held by nginx",
    )


def answered(sock: socket.socket) -> bool:
    """Whether the server has answered or closed ``sock`` (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True


def prometheus(args) -> None:
    prom = httpx.Client(base_url=args.prometheus, timeout=10)

    def query(expr: str) -> list:
        return prom.get("/api/v1/query", params={"query": expr}).json()["data"]["result"]

    up = query('up{job="tikka-backend"}')
    check("prometheus: backend target up", bool(up) and up[0]["value"][1] == "1", json.dumps(up)[:120])
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            series = query(target["expr"])
            values = [s["value"][1] for s in series]
            ok = any(v not in ("NaN", "+Inf", "-Inf") for v in values)
            check(
                f"grafana panel '{panel['title']}' [{target['legendFormat']}]", ok, f"{len(series)} series {values[:3]}"
            )


def traffic(args, rounds: int) -> None:
    """Requests of every kind the dashboard charts, spread over two scrape intervals."""
    api = httpx.Client(base_url="http://127.0.0.1:8000", timeout=120)
    for i in range(rounds):
        for _ in range(5):
            api.post("/predict", files={"image": ("p.jpg", pizza_photo(args), "image/jpeg")})
        api.post("/predict/explain", files={"image": ("p.jpg", pizza_photo(args), "image/jpeg")})
        api.post("/predict", files={"image": ("t.txt", b"not an image", "text/plain")})
        api.post("/llm/dish", json={"dish": "pizza", "task": "nutrition", "max_tokens": 16})
        if i < rounds - 1:
            time.sleep(args.scrape_interval + 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="tikka.local")
    parser.add_argument("--acme-token", required=True)
    parser.add_argument("--photo", default=str(PIZZA))
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--scrape-interval", type=float, default=10.0)
    args = parser.parse_args()
    through_nginx(args)
    published_ports(args)
    slow_client_wave(args)
    traffic(args, rounds=3)
    time.sleep(args.scrape_interval + 2)
    prometheus(args)
    failed = [name for ok, name, _ in results if not ok]
    print(f"{len(results) - len(failed)}/{len(results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
