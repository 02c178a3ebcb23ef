"""Image memory bounds against a real server (issue 21): compressed and trickling image URLs
from a loopback host, and huge solid-colour PNGs, with the server's peak RSS (VmHWM) read
from /proc before and after each case."""

from __future__ import annotations

import base64
import gzip
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.imaging import png
from tests.server import ServerProcess, run_server

URL_TIMEOUT = 2.0
MiB = 1 << 20
# A generous bound on peak RSS growth per request: the cases below would add gigabytes.
PEAK_GROWTH_BOUND = 400 * MiB
UNPACKED = 512 * MiB


def _compressed() -> dict[str, bytes]:
    zeros = bytes(UNPACKED)
    bodies = {"gzip": gzip.compress(zeros, compresslevel=9)}
    try:
        import zstandard

        bodies["zstd"] = zstandard.ZstdCompressor(level=19).compress(zeros)
    except ImportError:  # pragma: no cover - zstandard comes with the dev extra
        pass
    return bodies


class _Hostile(BaseHTTPRequestHandler):
    """/gzip and /zstd: 512 MiB of zeros packed small; /trickle: one byte a second."""

    bodies: dict[str, bytes] = {}
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        name = self.path.strip("/")
        if name in self.bodies:
            body = self.bodies[name]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Encoding", name)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif name == "trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for byte in png(3):
                if self.stop.wait(1.0):
                    return
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    _Hostile.bodies = _compressed()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Hostile.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from rerankd.devtools.synthetic_vision import build_clip

    clip = build_clip(model_root / "tiny-clip-hardening")
    args = ["--model", f"{clip}=clip", "--image-url-hosts", "127.0.0.1"]
    args += ["--image-url-allow-private", "--image-url-timeout", str(URL_TIMEOUT)]
    args += ["--request-timeout", "50"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("hardening-images")) as running:
        yield running


def peak_rss(server: ServerProcess) -> int:
    """The server's peak resident set (VmHWM) in bytes, from /proc."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def rerank(server: ServerProcess, documents: list[object]) -> httpx.Response:
    body = {"model": "clip", "query": "a red square", "documents": documents}
    return httpx.post(server.url + "/rerank", json=body, timeout=120)


@pytest.fixture(scope="module")
def warmed(server: ServerProcess) -> ServerProcess:
    ok = rerank(server, [{"image": base64.b64encode(png(1)).decode()}, "text"])
    assert ok.status_code == 200, ok.text
    return server


def solid_png(size: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compressed_image_urls_are_never_unpacked(
    warmed: ServerProcess, image_host: str, encoding: str
) -> None:
    if encoding not in _Hostile.bodies:
        pytest.skip("zstandard is not installed")
    before = peak_rss(warmed)
    response = rerank(warmed, [{"image": f"{image_host}/{encoding}"}])
    assert response.status_code == 400
    assert "Content-Encoding" in response.json()["error"]["message"]
    growth = peak_rss(warmed) - before
    print(f"VmHWM growth, {encoding} URL unpacking to {UNPACKED >> 20} MiB: {growth / MiB:.1f} MiB")
    assert growth < PEAK_GROWTH_BOUND


def test_a_trickling_image_url_is_cut_at_its_own_timeout(
    warmed: ServerProcess, image_host: str
) -> None:
    started = time.monotonic()
    response = rerank(warmed, [{"image": f"{image_host}/trickle"}])
    elapsed = time.monotonic() - started
    print(f"trickling URL answered after {elapsed:.1f}s (--image-url-timeout {URL_TIMEOUT:g})")
    # The image URL's deadline answered, not the request's (504 after 50 s).
    assert response.status_code == 400, response.text
    assert "--image-url-timeout" in response.json()["error"]["message"]


def test_huge_images_are_bounded_per_request(warmed: ServerProcess) -> None:
    big = solid_png(5900)  # 34.8 M pixels, ~100 KB as PNG
    before = peak_rss(warmed)
    one = rerank(warmed, [{"image": big}, "a caption"])
    assert one.status_code == 200, one.text
    growth = peak_rss(warmed) - before
    print(f"VmHWM growth, one 5900x5900 PNG: {growth / MiB:.1f} MiB")
    assert growth < PEAK_GROWTH_BOUND

    before = peak_rss(warmed)
    # 24 distinct images (one repeated would be deduplicated and decoded once).
    distinct = [{"image": big}] + [{"image": solid_png(5900 - i)} for i in range(1, 24)]
    many = rerank(warmed, distinct)
    assert many.status_code == 413, many.text
    assert "per request" in many.json()["error"]["message"]
    growth = peak_rss(warmed) - before
    print(f"VmHWM growth, 24 distinct 5900x5900 PNGs: {growth / MiB:.1f} MiB")
    assert growth < PEAK_GROWTH_BOUND
    assert rerank(warmed, [{"image": base64.b64encode(png(2)).decode()}]).status_code == 200


def test_the_server_wide_decode_budget_answers_429_when_spent() -> None:
    from rerankd.errors import Overloaded
    from rerankd.images import DecodeBudget

    budget = DecodeBudget(100, wait=0.2)
    with budget.reserve(80):
        with pytest.raises(Overloaded, match="decoding 80 image pixels"), budget.reserve(30):
            pass
        with budget.reserve(20):  # what fits still goes
            pass
    with budget.reserve(100):  # given back
        pass
