"""Build CLIP and SigLIP models of the real architectures with seeded random weights.

Each gets a tokenizer trained here (byte-level BPE with CLIP's start/end tokens, or a Unigram
with SigLIP's `</s>` and `<pad>`), an image-processor config of the real kind, and is saved
with `save_pretrained`, so it loads through exactly the code a downloaded model does. The
`clip_vit_b32` shape is openai/clip-vit-base-patch32's, for the benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankd.devtools.synthetic import _CORPUS, _train_unigram_tokenizer

_OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
_OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
_CAPTIONS = [
    "a photo of a red square on a blue background",
    "a drawing of a yellow circle",
    "green stripes and a white border",
    "a picture of a cat sleeping on a sofa",
    "a diagram of a network of servers",
    "a scanned page from a manual",
]

# (hidden, layers, heads, intermediate) per tower, and the projection size.
TINY = {"text": (32, 2, 4, 64), "vision": (32, 2, 4, 64), "projection": 16, "image": 32, "patch": 8}
CLIP_VIT_B32 = {
    "text": (512, 12, 8, 2048),
    "vision": (768, 12, 12, 3072),
    "projection": 512,
    "image": 224,
    "patch": 32,
}


def _train_bpe(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator((_CORPUS + _CAPTIONS) * 4, trainer=trainer)
    bos, eos = tokenizer.token_to_id(specials[0]), tokenizer.token_to_id(specials[1])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        pair="<|startoftext|> $A <|endoftext|> $B <|endoftext|>",
        special_tokens=[(specials[0], bos), (specials[1], eos)],
    )
    return tokenizer


def _train_unigram(vocab_size: int) -> Any:
    """The XLM-R-style Unigram of the cross-encoder fixtures, with SigLIP's template."""
    from tokenizers import processors

    tokenizer = _train_unigram_tokenizer(vocab_size)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return tokenizer


def _tower(shape: tuple[int, int, int, int]) -> dict[str, int]:
    hidden, layers, heads, intermediate = shape
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
    }


def build_clip(
    out: Path, *, shape: dict[str, Any] = TINY, vocab_size: int = 600, seed: int = 0
) -> Path:
    """A `CLIPModel` with a trained BPE tokenizer and a `CLIPImageProcessor`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tokenizer = _train_bpe(vocab_size)
    eos = tokenizer.token_to_id("<|endoftext|>")
    config = CLIPConfig(
        text_config={
            **_tower(shape["text"]),
            "vocab_size": tokenizer.get_vocab_size(),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.token_to_id("<|startoftext|>"),
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            **_tower(shape["vision"]),
            "image_size": shape["image"],
            "patch_size": shape["patch"],
        },
        projection_dim=shape["projection"],
    )
    model = CLIPModel(config)
    _spread(model, seed)
    model.save_pretrained(str(out))
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=77,
    ).save_pretrained(str(out))
    size = shape["image"]
    CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=_OPENAI_MEAN,
        image_std=_OPENAI_STD,
    ).save_pretrained(str(out))
    return out


def build_siglip(
    out: Path, *, shape: dict[str, Any] = TINY, vocab_size: int = 600, seed: int = 0
) -> Path:
    """A `SiglipModel` (text padded to 64 tokens, as trained) with a `SiglipImageProcessor`."""
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    torch.manual_seed(seed)
    tokenizer = _train_unigram(vocab_size)
    hidden = shape["vision"][0]
    config = SiglipConfig(
        text_config={
            **_tower((hidden, *shape["text"][1:])),
            "vocab_size": tokenizer.get_vocab_size(),
            "max_position_embeddings": 64,
            "pad_token_id": tokenizer.token_to_id("<pad>"),
            "eos_token_id": tokenizer.token_to_id("</s>"),
        },
        vision_config={
            **_tower(shape["vision"]),
            "image_size": shape["image"],
            "patch_size": shape["patch"],
        },
    )
    model = SiglipModel(config)
    _spread(model, seed)
    with torch.no_grad():  # SigLIP's trained scale and bias, so probabilities spread out
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-2.0)
    model.save_pretrained(str(out))
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=64,
    ).save_pretrained(str(out))
    size = shape["image"]
    SiglipImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(str(out))
    return out


def _spread(model: Any, seed: int) -> None:
    """Random towers embed everything alike; wider projections make cosines differ."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "projection" in name or name.endswith("head.weight") or "embeddings" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
