"""The benchmark's models, built once and cached as ordinary Hugging Face directories.

No trained cross-encoder can be downloaded here, so each model has the architecture and size
of a real one:

- `minilm-l6`: ms-marco-MiniLM-L6 (BERT, 6 layers, hidden 384), encoder weights from the
  built-in all-MiniLM-L6-v2 and a new one-label head;
- `xlmr-base`: bge-reranker-base (XLM-RoBERTa, 12 layers, hidden 768), seeded random weights;
- `v2m3-arch`: bge-reranker-v2-m3 (XLM-RoBERTa, 24 layers, hidden 1024, 8192 positions),
  seeded random weights, used for one latency figure only.

The XLM-R models get a Unigram tokenizer trained on text from `bench.workload`'s vocabulary
(a different seed from the benchmark's), sized so that it cuts English into about 1.3 tokens
a word and Chinese into about 0.6 tokens a character, as XLM-R's own tokenizer does. The
tokenizer `rerankd.devtools.synthetic` trains on its 14-sentence corpus cannot reach that:
its vocabulary stops at ~217 pieces whatever `vocab_size` asks, so English comes out at ~5
tokens a word and every passage would hit `max_length`, which is not the workload we mean.

Speed does not depend on what the weights have learnt, only on their shapes and the token
counts, which is why random weights are good enough here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.workload import WorkloadSpec, make_requests

WORK = Path(__file__).resolve().parent / ".work"
MODELS = WORK / "models"
RECIPE_FILE = "bench-recipe.json"
XLMR_VOCAB = 1000  # see the module docstring: ~1.3 tokens per English word, ~0.6 per hanzi
TOKENIZER_SEED = 12345  # the tokenizer's training text is not the benchmark's text
MAX_LENGTH = 512


@dataclass(frozen=True)
class ModelRecipe:
    """How one benchmark model is built; a changed recipe rebuilds the cached directory."""

    name: str
    family: str  # "bert" or "xlmr"
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    max_positions: int
    reference: str  # the real model whose shape this is
    revision: int = 2  # bump when the build steps change


RECIPES = {
    r.name: r
    for r in (
        ModelRecipe(
            "minilm-l6", "bert", 384, 6, 12, 1536, 512, "cross-encoder/ms-marco-MiniLM-L6-v2"
        ),
        ModelRecipe("xlmr-base", "xlmr", 768, 12, 12, 3072, 514, "BAAI/bge-reranker-base"),
        ModelRecipe("v2m3-arch", "xlmr", 1024, 24, 16, 4096, 8194, "BAAI/bge-reranker-v2-m3"),
    )
}


def model_dir(name: str, root: Path = MODELS) -> Path:
    """The cached directory of model `name`, built first if it is missing or stale."""
    recipe = RECIPES[name]
    out = root / name
    if _is_current(out, recipe):
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = root / f".{name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    builder: Callable[[Path, ModelRecipe], None] = (
        _build_bert if recipe.family == "bert" else _build_xlmr
    )
    builder(tmp, recipe)
    positions = recipe.max_positions - (2 if recipe.family == "xlmr" else 0)
    _portable_tokenizer_files(tmp, min(MAX_LENGTH, positions))
    (tmp / RECIPE_FILE).write_text(json.dumps(asdict(recipe), indent=2), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a half-built directory is never taken for a finished one
    return out


def weights_bytes(path: Path) -> int:
    """Size of the weight files: the reference for the server-RSS target."""
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def parameter_counts(path: Path) -> dict[str, int]:
    """Parameters in the embeddings and in the rest, read from the safetensors header."""
    from safetensors import safe_open

    counts = {"embedding": 0, "non_embedding": 0}
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                shape = handle.get_slice(key).get_shape()
                size = 1
                for dim in shape:
                    size *= dim
                group = "embedding" if "embeddings." in key else "non_embedding"
                counts[group] += size
    return counts


def _is_current(out: Path, recipe: ModelRecipe) -> bool:
    marker = out / RECIPE_FILE
    if not marker.is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")) == asdict(recipe)


def _build_bert(out: Path, recipe: ModelRecipe) -> None:
    from rerankd.devtools.synthetic import build_bert_cross_encoder, builtin_tokenizer_dir

    build_bert_cross_encoder(out, init_from=builtin_tokenizer_dir())


def _build_xlmr(out: Path, recipe: ModelRecipe) -> None:
    """The devtools builder makes the model; the tokenizer is then swapped for a realistic one."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    from rerankd.devtools.synthetic import build_xlmr_cross_encoder

    build_xlmr_cross_encoder(
        out,
        hidden_size=recipe.hidden_size,
        layers=recipe.layers,
        heads=recipe.heads,
        intermediate_size=recipe.intermediate_size,
        max_positions=recipe.max_positions,
    )
    tokenizer = _workload_tokenizer(out / "tokenizer.json")
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification.from_pretrained(str(out))
    model.resize_token_embeddings(tokenizer.get_vocab_size(), mean_resizing=False)
    with torch.no_grad():  # every row seeded the same way, not only the new ones
        model.get_input_embeddings().weight.normal_(0.0, model.config.initializer_range)
    model.save_pretrained(str(out))
    _save_fast_tokenizer(out, tokenizer, recipe.max_positions - 2)


def _workload_tokenizer(template_file: Path):
    """A Unigram tokenizer with the devtools one's pipeline, trained on workload-like text."""
    from tokenizers import Tokenizer, models, trainers

    template = Tokenizer.from_file(str(template_file))
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = template.normalizer
    tokenizer.pre_tokenizer = template.pre_tokenizer
    tokenizer.decoder = template.decoder
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.UnigramTrainer(
        vocab_size=XLMR_VOCAB, special_tokens=specials, unk_token="<unk>", shrinking_factor=0.75
    )
    corpus = []
    for request in make_requests(60, WorkloadSpec(seed=TOKENIZER_SEED)):
        corpus.append(request.query)
        corpus.extend(request.documents)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    for position, token in enumerate(specials):  # the pair template refers to these ids
        assert tokenizer.token_to_id(token) == position
    tokenizer.post_processor = template.post_processor
    return tokenizer


def _save_fast_tokenizer(out: Path, tokenizer, model_max_length: int) -> None:
    from rerankd.devtools.synthetic import save_xlmr_tokenizer

    for stale in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / stale).unlink(missing_ok=True)
    save_xlmr_tokenizer(out, tokenizer, model_max_length)


def _portable_tokenizer_files(out: Path, length: int) -> None:
    """Tokenizer files that every system reads the same way, whatever its transformers.

    Every system gets the same default `max_length` (512); the truncation and padding to 128
    that all-MiniLM-L6-v2's tokenizer carries are dropped; transformers 5's class name
    `TokenizersBackend` becomes `PreTrainedTokenizerFast`, which 4.x (Infinity's) knows too.
    """
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for stale in ("max_length", "stride", "truncation_strategy", "pad_to_multiple_of"):
        config.pop(stale, None)
    config["model_max_length"] = length
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer_path = out / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    tokenizer["truncation"] = None
    tokenizer["padding"] = None
    tokenizer_path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")


def main() -> None:
    for name in RECIPES:
        path = model_dir(name)
        print(f"{name}: {path} ({weights_bytes(path) / 2**20:.0f} MiB of weights)")


if __name__ == "__main__":
    main()
