"""Image reranking throughput: a CLIP ViT-B/32-shape model (random weights), 2 threads.

Images per second for one 32-image request (640x480 JPEGs, base64, a text query):

- rerankd cold: every image new to the server (decode, preprocess, image tower);
- rerankd warm: the same images with a new query (the embedding cache answers; only the
  query's text runs);
- a plain transformers loop in this process: PIL decode, `CLIPImageProcessor`, and
  `CLIPModel.get_image_features` on the batch of 32 plus `get_text_features` on the query.

All in the same run, on the same machine, with 2 torch threads each; medians of `--rounds`.

    python -m bench.image_bench [--rounds 3] [--images 32]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench import machine
from bench.fixtures import WORK
from bench.servers import MAIN_PYTHON, THREADS, System, serve

RESULTS = Path(__file__).resolve().parent / "results"


def _jpegs(seed: int, count: int) -> list[bytes]:
    """Distinct 640x480 photos-like JPEGs (gradients and shapes), made with Pillow."""
    from PIL import Image, ImageDraw

    images = []
    for i in range(count):
        k = seed * 1000 + i
        image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for j in range(6):
            x, y = (k * 37 + j * 101) % 560, (k * 53 + j * 67) % 400
            draw.ellipse(
                (x, y, x + 80, y + 80), fill=((k * 29 + j * 50) % 256, (j * 90) % 256, k % 256)
            )
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        images.append(buffer.getvalue())
    return images


def _model() -> Path:
    from rerankd.devtools.synthetic_vision import CLIP_VIT_B32, build_clip

    out = WORK / "models" / "clip-vit-b32-random"
    if not (out / "model.safetensors").is_file():
        out.mkdir(parents=True, exist_ok=True)
        build_clip(out, shape=CLIP_VIT_B32)
    return out


def _rerankd(model_dir: Path, port: int) -> list[str]:
    return [
        str(MAIN_PYTHON), "-m", "rerankd", "serve", "--model", str(model_dir),
        "--port", str(port), "--threads", str(THREADS), "--log-level", "warning",
    ]  # fmt: skip


def _request(url: str, query: str, images: list[bytes]) -> float:
    body = {"query": query, "documents": [{"image": base64.b64encode(i).decode()} for i in images]}
    started = time.perf_counter()
    response = httpx.post(url + "/rerank", json=body, timeout=600, trust_env=False)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds


def _transformers_loop(model_dir: Path, rounds: int, count: int) -> list[float]:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    torch.set_num_threads(THREADS)
    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    times = []
    for round_ in range(rounds + 1):  # the first round warms up
        images = _jpegs(100 + round_, count)
        started = time.perf_counter()
        pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
        with torch.inference_mode():
            pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]
            image_features = model.get_image_features(pixel_values=pixels)
            text = tokenizer(["a photo of a red circle"], return_tensors="pt")
            text_features = model.get_text_features(**text)
        image_embeds = getattr(image_features, "pooler_output", image_features)
        text_embeds = getattr(text_features, "pooler_output", text_features)
        _ = (
            torch.nn.functional.normalize(image_embeds, dim=-1)
            @ torch.nn.functional.normalize(text_embeds, dim=-1).T
        )
        if round_:
            times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args(argv)
    model_dir = _model()
    system = System("rerankd-clip", "native", _rerankd)
    cold: list[float] = []
    warm: list[float] = []
    with serve(system, model_dir) as server:
        _request(server.url, "warm up", _jpegs(99, 2))
        for round_ in range(args.rounds):
            images = _jpegs(round_, args.images)
            cold.append(_request(server.url, f"a red circle {round_}", images))
            warm.append(_request(server.url, f"a blue circle {round_}", images))
    loop = _transformers_loop(model_dir, args.rounds, args.images)

    def rate(times: list[float]) -> float:
        return round(args.images / statistics.median(times), 2)

    result = {
        "benchmark": "image_bench",
        "machine": machine.describe(),
        "model": "CLIP ViT-B/32 shape, random weights (text vocab 600)",
        "images_per_request": args.images,
        "image": "640x480 JPEG, base64",
        "threads": THREADS,
        "rounds": args.rounds,
        "images_per_second": {
            "rerankd_cold": rate(cold),
            "rerankd_warm_cache": rate(warm),
            "transformers_loop": rate(loop),
        },
        "seconds": {"rerankd_cold": cold, "rerankd_warm_cache": warm, "transformers_loop": loop},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "image_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result["images_per_second"], sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
