"""Image input, safely: base64 and data URLs, remote URLs behind an allowlist, Pillow decoding.

Everything an attacker controls is bounded before it costs memory: the encoded size before
base64 is decoded or a download goes on, the pixel count from the image header before any
pixel is decoded (a decompression bomb is a 413, not a dead worker). Remote URLs are off
unless hosts are allowlisted, and even an allowed name is refused when it resolves to a
loopback, link-local or private address (server-side request forgery), unless that is allowed
too; the connection then goes to the very address that was checked, so a second DNS answer
cannot point it elsewhere. Decoding runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from rerankd.documents import Document, ImageDocument, ImageRef, Loaded
from rerankd.errors import InvalidInput, Overloaded, PayloadTooLarge

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# Decoded images are kept no larger than this on their longer side: every image family here
# resizes to a few hundred pixels, and a 6000-pixel-wide image kept whole costs 100 MB.
DECODE_SIDE = 1024
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WHITESPACE = str.maketrans("", "", " \t\r\n")


@dataclass(frozen=True)
class ImagePolicy:
    """Limits on image input; `url_hosts` empty means remote URLs are refused."""

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 36_000_000
    url_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_private: bool = False
    timeout: float = 5.0  # a total deadline per URL: DNS, connect, headers and the whole body
    max_request_pixels: int = 150_000_000  # header pixels of all images one request decodes
    max_decode_pixels: int = 300_000_000  # header pixels being decoded server-wide at once
    url_concurrency: int = 4  # URLs one request fetches at once
    decode_side: int = DECODE_SIDE


def header_pixels(data: bytes, where: str, max_pixels: int) -> int:
    """Width x height from the image's header (nothing decoded), within `max_pixels`."""
    with _opened(data, where, max_pixels) as image:
        return _checked_size(image, where, max_pixels)


def decode(data: bytes, where: str, max_pixels: int, side: int = DECODE_SIDE) -> Image.Image:
    """Encoded bytes -> an RGB image (the first frame of an animation), within `max_pixels`,
    downscaled while decoding to at most `side` pixels on its longer edge.

    JPEG is decoded at a reduced DCT scale (`draft`), so a huge photo never exists at full
    size; other formats are decoded once and reduced at once by an integer box filter.
    """
    with _opened(data, where, max_pixels) as image:
        _checked_size(image, where, max_pixels)
        try:
            image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (side, side))  # the smallest DCT scale still >= side
            image.load()
            factor = -(-max(image.size) // side)  # ceil
            if factor > 1 and image.mode in _REDUCIBLE:  # reduce first: no full-size copy
                return image.reduce(factor).convert("RGB")
            rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
            raise InvalidInput(
                f"{where} could not be decoded (truncated or corrupt image: {exc})"
            ) from None
    return rgb.reduce(factor) if factor > 1 else rgb


def _checked_size(image: Image.Image, where: str, max_pixels: int) -> int:
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{where} is {width}x{height} pixels; at most {max_pixels:,} pixels per image"
        )
    return width * height


@contextlib.contextmanager
def _opened(data: bytes, where: str, max_pixels: int) -> Iterator[Image.Image]:
    """The image's header read, with Pillow's errors turned into 400s and 413s."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            yield image
    except InvalidInput:  # ours (also a ValueError)
        raise
    except Image.DecompressionBombError:
        # Pillow's own backstop (twice Image.MAX_IMAGE_PIXELS) fired while reading the header.
        raise PayloadTooLarge(
            f"{where} has far more than {max_pixels:,} pixels per image (a decompression bomb?)"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            f"{where} is not an image rerankd can read (PNG, JPEG, WebP, or the first frame of a GIF)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise InvalidInput(
            f"{where} could not be decoded (truncated or corrupt image: {exc})"
        ) from None


class DecodeBudget:
    """Header pixels being decoded server-wide at once; over it, a request waits its turn
    for a while, then is told to come back (429) rather than decoding past the memory."""

    def __init__(self, pixels: int, wait: float = 2.0) -> None:
        self.pixels = pixels
        self._wait = wait
        self._used = 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        with self._free:
            fits = self._free.wait_for(lambda: self._used + pixels <= self.pixels, self._wait)
            if not fits:
                raise Overloaded(
                    f"the server is decoding {self._used:,} image pixels for other requests "
                    f"(at most {self.pixels:,} at once); retry shortly",
                    retry_after=1.0,
                )
            self._used += pixels
        try:
            yield
        finally:
            with self._free:
                self._used -= pixels
                self._free.notify_all()


def decode_all(
    images: Sequence[tuple[str, ImageDocument]],
    max_pixels: int,
    policy: ImagePolicy | None = None,
    budget: DecodeBudget | None = None,
) -> list[ImageDocument]:
    """Decode each (where, image) that has no pixels yet, one at a time, off the event loop.

    Every header is read first: a request whose images add up to more than the policy's
    `max_request_pixels` is refused (413) before any pixel is decoded.
    """
    policy = policy or ImagePolicy(max_pixels=max_pixels)
    todo = [(where, image) for where, image in images if image.pixels is None]
    sizes = [header_pixels(image.data, where, max_pixels) for where, image in todo]
    if sum(sizes) > policy.max_request_pixels:
        raise PayloadTooLarge(
            f"the request's images add up to {sum(sizes):,} pixels; at most "
            f"{policy.max_request_pixels:,} per request (send smaller images, or fewer)"
        )
    decoded: dict[int, ImageDocument] = {}
    for (where, image), pixels in zip(todo, sizes, strict=True):
        with budget.reserve(min(pixels, budget.pixels)) if budget else contextlib.nullcontext():
            decoded[id(image)] = image.with_pixels(
                decode(image.data, where, max_pixels, policy.decode_side)
            )
    return [decoded.get(id(image), image) for _, image in images]


def decode_request(
    query: Loaded,
    documents: Sequence[tuple[int, Loaded]],
    max_pixels: int,
    policy: ImagePolicy | None = None,
    budget: DecodeBudget | None = None,
) -> list[Loaded]:
    """The query and the given (index, document)s, images decoded; errors name the index."""
    items = [("query", query), *((f"documents[{i}]", d) for i, d in documents)]
    images = [(where, d) for where, d in items if isinstance(d, ImageDocument)]
    decoded = iter(decode_all(images, max_pixels, policy, budget))
    return [next(decoded) if isinstance(d, ImageDocument) else d for _, d in items]


def is_url(source: str) -> bool:
    return bool(_SCHEME.match(source)) and not source.startswith("data:")


def load_inline(document: Document, where: str, max_bytes: int) -> Loaded:
    """Text as it is; an image sent inline (base64 or a data URL) -> its bytes and hash."""
    if not isinstance(document, ImageRef):
        return document
    if is_url(document.source.strip()):
        raise InvalidInput(f"{where} is an image URL; only the server fetches URLs")
    data = from_base64(document.source.strip(), where, max_bytes)
    return ImageDocument.from_bytes(data, source=document.source)


def from_base64(source: str, where: str, max_bytes: int) -> bytes:
    """Bytes of a bare base64 string or a `data:image/...;base64,` URL."""
    payload = source
    if source.startswith("data:"):
        header, comma, payload = source.partition(",")
        media = header[5:].split(";")
        if not comma or "base64" not in media[1:]:
            raise InvalidInput(
                f"{where} is a data URL that is not base64 (data:image/png;base64,...)"
            )
        if media[0] and not media[0].lower().startswith("image/"):
            raise InvalidInput(f"{where} is a data URL of {media[0]!r}, not an image")
    payload = payload.translate(_WHITESPACE)
    if len(payload) // 4 * 3 > max_bytes:
        raise PayloadTooLarge(
            f"{where} is about {len(payload) // 4 * 3:,} bytes; at most {max_bytes:,} per image"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{where} is neither valid base64 nor a data URL or an http(s) URL"
        ) from None


class ImageLoader:
    """Turns `ImageRef`s into `ImageDocument`s (bytes and hash) under an `ImagePolicy`."""

    def __init__(self, policy: ImagePolicy) -> None:
        self.policy = policy
        self.budget = DecodeBudget(policy.max_decode_pixels)
        self._client: httpx.AsyncClient | None = None

    async def load(self, query: Document, documents: list[Document]) -> tuple[Loaded, list[Loaded]]:
        """Load every image of a request: base64 off the event loop, at most
        `url_concurrency` URLs fetched at once."""
        items = [("query", query), *((f"documents[{i}]", d) for i, d in enumerate(documents))]
        if not any(isinstance(d, ImageRef) for _, d in items):
            return query, documents  # type: ignore[return-value]  # no ImageRef: all loaded
        slots = asyncio.Semaphore(self.policy.url_concurrency)

        async def one(where: str, document: Document) -> Loaded:
            if isinstance(document, ImageRef) and is_url(document.source.strip()):
                async with slots:
                    return await self._load_one(where, document)
            return await self._load_one(where, document)

        loaded = await asyncio.gather(*(one(where, d) for where, d in items))
        return loaded[0], list(loaded[1:])

    async def decode_request(
        self, query: Loaded, documents: Sequence[tuple[int, Loaded]]
    ) -> list[Loaded]:
        """`decode_request` in a worker thread, when there is any image to decode."""
        if not any(isinstance(d, ImageDocument) for d in (query, *(d for _, d in documents))):
            return [query, *(d for _, d in documents)]
        return await asyncio.to_thread(
            decode_request, query, documents, self.policy.max_pixels, self.policy, self.budget
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _load_one(self, where: str, document: Document) -> Loaded:
        if not isinstance(document, ImageRef):
            return document
        source = document.source.strip()
        if is_url(source):
            data = await self._fetch(source, where)
            return ImageDocument.from_bytes(data, source=document.source)
        if len(source) < 64 * 1024:
            return load_inline(document, where, self.policy.max_bytes)
        return await asyncio.to_thread(load_inline, document, where, self.policy.max_bytes)

    async def _fetch(self, url: str, where: str) -> bytes:
        """The URL's bytes, all of it (DNS included) within the policy's timeout: a server
        trickling one byte a second is cut at the deadline, not at the request's."""
        try:
            async with asyncio.timeout(self.policy.timeout):
                return await self._fetch_unbounded(url, where)
        except TimeoutError:
            raise InvalidInput(
                f"{where}: the image URL did not send the whole image within "
                f"{self.policy.timeout:g}s (--image-url-timeout)"
            ) from None

    async def _fetch_unbounded(self, url: str, where: str) -> bytes:
        policy = self.policy
        if not policy.url_hosts:
            raise InvalidInput(
                f"{where} is an image URL, but this server does not fetch image URLs; send the "
                "image as base64 or a data URL (or start the server with --image-url-hosts)"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise InvalidInput(
                f"{where}: only http and https image URLs are fetched, not {parts.scheme}:"
            )
        host = (parts.hostname or "").lower()
        if not host or ("*" not in policy.url_hosts and host not in policy.url_hosts):
            raise InvalidInput(
                f"{where}: image URL host {host!r} is not allowed (--image-url-hosts)"
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidInput(f"{where}: the image URL has an invalid port") from None
        address = await self._resolve(host, port, where)
        netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        target = parts._replace(netloc=netloc).geturl()
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        client = self._client or httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._client = client
        try:
            async with client.stream(
                "GET",
                target,
                # Images are compressed already; a compressed body could unpack to gigabytes.
                headers={"Host": host_header, "Accept": "image/*", "Accept-Encoding": "identity"},
                extensions=extensions,
                timeout=httpx.Timeout(policy.timeout, connect=min(policy.timeout, 2.0)),
            ) as response:
                if response.status_code != 200:
                    raise InvalidInput(
                        f"{where}: the image URL answered HTTP {response.status_code}"
                        + (" (redirects are not followed)" if response.is_redirect else "")
                    )
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise InvalidInput(
                        f"{where}: the image URL answered with Content-Encoding {encoding!r}; "
                        "images are fetched uncompressed only (Accept-Encoding: identity)"
                    )
                declared = int(response.headers.get("content-length") or 0)
                if declared > policy.max_bytes:
                    raise PayloadTooLarge(
                        f"{where}: the image URL's {declared:,} bytes exceed {policy.max_bytes:,}"
                    )
                body = bytearray()
                async for chunk in response.aiter_raw():  # the bytes as sent, never unpacked
                    body += chunk
                    if len(body) > policy.max_bytes:
                        raise PayloadTooLarge(
                            f"{where}: the image URL sent more than {policy.max_bytes:,} bytes"
                        )
                return bytes(body)
        except httpx.TimeoutException:
            raise InvalidInput(
                f"{where}: the image URL did not answer within {policy.timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise InvalidInput(
                f"{where}: the image URL could not be fetched ({type(exc).__name__})"
            ) from None

    async def _resolve(self, host: str, port: int, where: str) -> str:
        """One address of `host`, every one of which must be public unless private is allowed."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.policy.timeout
            )
        except (OSError, TimeoutError):
            raise InvalidInput(f"{where}: the image URL host {host!r} does not resolve") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.policy.allow_private:
            for address in addresses:
                reason = refused_reason(address)
                if reason:
                    raise InvalidInput(
                        f"{where}: the image URL host {host!r} resolves to {reason} address "
                        f"{address}, which is refused (--image-url-allow-private)"
                    )
        if not addresses:
            raise InvalidInput(f"{where}: the image URL host {host!r} does not resolve")
        return addresses[0]


def refused_reason(address: str) -> str | None:
    """Why an address is not a public one ('a loopback', 'a private', ...), or None."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback"
    if ip.is_link_local:
        return "a link-local"
    if ip.is_private:
        return "a private"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "a non-public"
    return None
