"""Build a tiny ColBERT in PyLate's format with seeded random weights.

A BERT encoder (`BertModel`), a WordPiece tokenizer trained here (with PyLate's `[Q] ` and
`[D] ` prefix tokens added to its vocabulary, as PyLate itself does before saving), and the
projection saved as PyLate's `Dense` module (`1_Dense/`), with `modules.json` and
`config_sentence_transformers.json` saying what PyLate's `ColBERT` reads: prefixes, query and
document lengths, whether the query attends to its expansion tokens, and the skiplist. PyLate
loads the directory as it loads a published checkpoint, and so does rerankd.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rerankd.devtools.synthetic import _CORPUS

if TYPE_CHECKING:
    from tokenizers import Tokenizer

QUERY_PREFIX = "[Q] "
DOCUMENT_PREFIX = "[D] "


def build_colbert(
    out: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 128,
    embedding_size: int = 32,
    query_length: int = 32,
    document_length: int = 180,
    attend_to_expansion_tokens: bool = False,
    vocab_size: int = 2000,
    max_positions: int = 512,
    seed: int = 0,
    encoder: Literal["bert", "modernbert"] = "bert",
) -> Path:
    """A PyLate ColBERT directory at `out`; MiniLM's size is hidden 384, 6 layers, 12 heads.

    `encoder="modernbert"` gives GTE-ModernColBERT's shape: a ModernBERT encoder (rotary
    positions, alternating local and global attention, no token type ids) and a byte-level BPE
    tokenizer."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    if encoder == "modernbert":
        from rerankd.devtools.synthetic_llm import train_modernbert_tokenizer

        tokenizer = train_modernbert_tokenizer()
        tokenizer.add_tokens([QUERY_PREFIX, DOCUMENT_PREFIX])
    else:
        tokenizer = _train_wordpiece(vocab_size)
    shape = {
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_positions,
        "pad_token_id": tokenizer.token_to_id("[PAD]"),
    }
    _encoder(encoder, shape, tokenizer).eval().save_pretrained(str(out))
    _save_tokenizer(out, tokenizer, max_positions, type_ids=encoder == "bert")
    dense = out / "1_Dense"
    dense.mkdir(parents=True, exist_ok=True)
    weight = torch.randn(embedding_size, hidden_size) / hidden_size**0.5
    save_file({"linear.weight": weight.contiguous()}, str(dense / "model.safetensors"))
    _write(
        dense / "config.json",
        {
            "in_features": hidden_size,
            "out_features": embedding_size,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        },
    )
    _write(
        out / "modules.json",
        [
            {
                "idx": 0,
                "name": "0",
                "path": "",
                "type": "sentence_transformers.models.Transformer",
            },
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
        ],
    )
    _write(out / "sentence_bert_config.json", {"max_seq_length": 179, "do_lower_case": False})
    _write(
        out / "config_sentence_transformers.json",
        {
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "MaxSim",
            "query_prefix": QUERY_PREFIX,
            "document_prefix": DOCUMENT_PREFIX,
            "query_length": query_length,
            "document_length": document_length,
            "attend_to_expansion_tokens": attend_to_expansion_tokens,
            "skiplist_words": list(string.punctuation),
        },
    )
    return out


def _encoder(kind: str, shape: dict[str, Any], tokenizer: Tokenizer) -> Any:
    if kind == "modernbert":
        from transformers import ModernBertConfig, ModernBertModel

        ids = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]")}
        modern = ModernBertConfig(
            **shape,
            global_attn_every_n_layers=2,
            # Windows of +-32 tokens: long documents cross them, while every query position
            # (32) still sees a real token, as in GTE-ModernColBERT (128). A masked expansion
            # token whose window holds no real token has no defined attention, and transformers
            # versions answer it differently.
            local_attention=64,
            cls_token_id=ids["[CLS]"],
            sep_token_id=ids["[SEP]"],
            bos_token_id=ids["[CLS]"],
            eos_token_id=ids["[SEP]"],
        )
        modern.architectures = ["ModernBertModel"]
        return ModernBertModel(modern)
    from transformers import BertConfig, BertModel

    config = BertConfig(**shape)
    config.architectures = ["BertModel"]
    return BertModel(config)


def _write(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _train_wordpiece(vocab_size: int) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    words = " ".join(_CORPUS) + " " + " ".join(string.punctuation)
    corpus = _CORPUS * 4 + [words] + [" ".join(_CORPUS[i:] + _CORPUS[:i]) for i in range(14)]
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    # PyLate adds its prefixes as ordinary tokens (and resizes the embeddings) before saving.
    tokenizer.add_tokens([QUERY_PREFIX, DOCUMENT_PREFIX])
    return tokenizer


def _save_tokenizer(out: Path, tokenizer: Tokenizer, max_positions: int, type_ids: bool) -> None:
    from transformers import PreTrainedTokenizerFast

    # ModernBERT takes no token type ids (its tokenizer config says so, as the real one's does).
    names = ["input_ids", "token_type_ids", "attention_mask"] if type_ids else None

    PreTrainedTokenizerFast(  # untyped in transformers
        tokenizer_object=tokenizer,
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=max_positions,
        model_input_names=names or ["input_ids", "attention_mask"],
    ).save_pretrained(str(out))
    # transformers 5 names its own backend class, which the transformers PyLate needs lacks.
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write(config_file, config)
