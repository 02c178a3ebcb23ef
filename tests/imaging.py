"""Test images, made with Pillow: solid colours, patterns, formats, and broken or hostile ones."""

from __future__ import annotations

import base64
import io
from functools import lru_cache

from PIL import Image


def picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A distinct RGB picture per seed: a gradient in one colour with a bright square."""
    width, height = size
    image = Image.new("RGB", size, ((seed * 67) % 256, (seed * 151) % 256, (seed * 29) % 256))
    for x in range(width):
        for y in range(0, height, 3):
            image.putpixel((x, y), ((x * 5 + seed * 40) % 256, (y * 7) % 256, (seed * 90) % 256))
    square = 8 + seed % 10
    image.paste(
        (255, 255 - seed * 20 % 256, 0),
        (seed % 20, seed % 15, seed % 20 + square, seed % 15 + square),
    )
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{b64(data)}"


def png(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    return encode(picture(seed, size))


def animated_gif(first: tuple[int, int, int], second: tuple[int, int, int]) -> bytes:
    frames = [Image.new("RGB", (16, 16), first), Image.new("RGB", (16, 16), second)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def truncated_png() -> bytes:
    data = png(3, (64, 64))
    return data[: len(data) // 2]


@lru_cache(maxsize=1)
def bomb() -> bytes:
    """A 30000 x 30000 PNG (900 million pixels, 2.7 GB as RGB) in about 100 KB."""
    return encode(Image.new("1", (30000, 30000)))
