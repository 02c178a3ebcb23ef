"""Safe image input: Pillow decoding limits, base64 and data URLs, and remote URLs (SSRF)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rerankd.documents import ImageDocument, ImageRef, TextDocument
from rerankd.errors import InvalidInput, PayloadTooLarge
from rerankd.images import ImageLoader, ImagePolicy, decode, from_base64, refused_reason
from tests.imaging import animated_gif, b64, bomb, data_url, encode, picture, png, truncated_png

MAX_PIXELS = 36_000_000


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_common_formats_decode_to_rgb(fmt: str) -> None:
    image = decode(encode(picture(1, (40, 30)), fmt), "documents[0]", MAX_PIXELS)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_an_animated_gif_gives_its_first_frame() -> None:
    image = decode(animated_gif((250, 0, 0), (0, 0, 250)), "documents[0]", MAX_PIXELS)
    red, green, blue = image.getpixel((8, 8))  # type: ignore[misc]
    assert red > 200 and blue < 50


def test_rgba_and_palette_images_become_rgb() -> None:
    rgba = picture(2).convert("RGBA")
    assert decode(encode(rgba), "q", MAX_PIXELS).mode == "RGB"
    assert decode(encode(picture(2).convert("P")), "q", MAX_PIXELS).mode == "RGB"


def test_truncated_and_random_bytes_are_400s_naming_the_document() -> None:
    with pytest.raises(InvalidInput, match=r"documents\[3\] could not be decoded") as error:
        decode(truncated_png(), "documents[3]", MAX_PIXELS)
    assert not isinstance(error.value, PayloadTooLarge)
    with pytest.raises(InvalidInput, match=r"documents\[1\] is not an image"):
        decode(bytes(range(256)) * 8, "documents[1]", MAX_PIXELS)


def test_other_formats_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not an image rerankd can read"):
        decode(encode(picture(1), "BMP"), "documents[0]", MAX_PIXELS)


def test_a_decompression_bomb_is_413_before_any_pixel_is_decoded() -> None:
    with pytest.raises(
        PayloadTooLarge, match=r"documents\[0\] has far more than 36,000,000 pixels"
    ):
        decode(bomb(), "documents[0]", MAX_PIXELS)
    # The same limit, lower: an ordinary image over it is refused the same way.
    with pytest.raises(PayloadTooLarge, match="at most 100 pixels"):
        decode(png(1), "query", 100)


def test_base64_and_data_urls() -> None:
    data = png(4)
    assert from_base64(b64(data), "q", 1 << 20) == data
    assert from_base64(data_url(data), "q", 1 << 20) == data
    wrapped = "\n".join(b64(data)[i : i + 76] for i in range(0, len(b64(data)), 76))
    assert from_base64(wrapped, "q", 1 << 20) == data
    with pytest.raises(InvalidInput, match=r"documents\[2\] is neither valid base64"):
        from_base64("this is a caption, not an image", "documents[2]", 1 << 20)
    with pytest.raises(InvalidInput, match="not an image"):
        from_base64("data:text/plain;base64," + b64(b"hello"), "q", 1 << 20)
    with pytest.raises(InvalidInput, match="not base64"):
        from_base64("data:image/png,rawbytes", "q", 1 << 20)
    with pytest.raises(PayloadTooLarge, match="at most 1,024 per image"):
        from_base64(b64(bytes(4096)), "q", 1024)


def test_addresses_that_are_not_public_are_named() -> None:
    assert refused_reason("127.0.0.1") == "a loopback"
    assert refused_reason("::1") == "a loopback"
    assert refused_reason("::ffff:127.0.0.1") == "a loopback"
    assert refused_reason("169.254.169.254") == "a link-local"
    assert refused_reason("fe80::1") == "a link-local"
    assert refused_reason("10.1.2.3") == "a private"
    assert refused_reason("192.168.0.10") == "a private"
    assert refused_reason("100.64.0.1") == "a non-public"
    assert refused_reason("0.0.0.0") is not None
    assert refused_reason("1.1.1.1") is None


class _Images(BaseHTTPRequestHandler):
    """Serves /ok.png, a redirect, a 404 and an oversized body."""

    body = png(5)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/ok.png":
            self._send(200, self.body, {"Content-Type": "image/png"})
        elif self.path == "/moved":
            self._send(302, b"", {"Location": "/ok.png"})
        elif self.path == "/big":
            self._send(200, bytes(64 * 1024), {"Content-Type": "image/png"})
        else:
            self._send(404, b"no", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def _load(policy: ImagePolicy, source: str) -> ImageDocument:
    loader = ImageLoader(policy)
    try:
        _, documents = await loader.load(TextDocument("q"), [TextDocument("t"), ImageRef(source)])
    finally:
        await loader.close()
    assert isinstance(documents[0], TextDocument)
    image = documents[1]
    assert isinstance(image, ImageDocument)
    return image


async def test_urls_are_refused_when_no_host_is_allowed(image_host: str) -> None:
    with pytest.raises(InvalidInput, match=r"documents\[1\] is an image URL, but this server"):
        await _load(ImagePolicy(), image_host + "/ok.png")


async def test_a_host_off_the_allowlist_is_refused(image_host: str) -> None:
    policy = ImagePolicy(url_hosts=frozenset({"images.internal.test"}))
    with pytest.raises(InvalidInput, match="host '127.0.0.1' is not allowed"):
        await _load(policy, image_host + "/ok.png")


async def test_an_allowed_name_resolving_to_loopback_is_refused(image_host: str) -> None:
    port = image_host.rsplit(":", 1)[1]
    policy = ImagePolicy(url_hosts=frozenset({"localhost"}))
    with pytest.raises(InvalidInput, match="resolves to a loopback address"):
        await _load(policy, f"http://localhost:{port}/ok.png")


async def test_private_addresses_when_allowed_are_fetched_with_limits(image_host: str) -> None:
    policy = ImagePolicy(url_hosts=frozenset({"127.0.0.1"}), allow_private=True, max_bytes=32_000)
    image = await _load(policy, image_host + "/ok.png")
    assert image.data == _Images.body and image.source == image_host + "/ok.png"
    assert image.digest == ImageDocument.from_bytes(_Images.body).digest
    with pytest.raises(InvalidInput, match="HTTP 302 .redirects are not followed"):
        await _load(policy, image_host + "/moved")
    with pytest.raises(InvalidInput, match="HTTP 404"):
        await _load(policy, image_host + "/missing")
    with pytest.raises(PayloadTooLarge, match="exceed 32,000"):
        await _load(policy, image_host + "/big")
    with pytest.raises(InvalidInput, match="only http and https"):
        await _load(policy, "ftp://127.0.0.1/ok.png")


async def test_the_same_bytes_have_the_same_hash_whatever_the_shape() -> None:
    loader = ImageLoader(ImagePolicy())
    data = png(6)
    query, documents = await loader.load(ImageRef(b64(data)), [ImageRef(data_url(data))])
    assert isinstance(query, ImageDocument) and isinstance(documents[0], ImageDocument)
    assert query.digest == documents[0].digest != TextDocument(b64(data)).digest
    decoded = await loader.decode_request(query, [])
    assert isinstance(decoded[0], ImageDocument) and decoded[0].pixels is not None
    assert decoded[0].pixels.size == (48, 40)
