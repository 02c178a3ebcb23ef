"""A tiny Qwen3-VL-Reranker: `Qwen3VLForConditionalGeneration` with seeded random weights.

The shape is the 2B/8B models' (a Qwen3 text decoder with interleaved multimodal rotary
sections, a ViT with 16-pixel patches merged 2x2, deepstack features fed to the first text
layers), tiny. The tokenizer is Qwen's byte-level BPE trained here (`synthetic_llm`) with
Qwen3-VL's vision special tokens added, and the chat template renders content lists the way
Qwen3-VL-Instruct's does (text parts as they are, an image part as
`<|vision_start|><|image_pad|><|vision_end|>`). The image processor is transformers'
`Qwen2VLImageProcessor` config, as the real checkpoints ship it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerankd.devtools.synthetic_llm import save_qwen_tokenizer, train_qwen_tokenizer

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message.role + '\\n' }}"
    "{% if message.content is string %}{{ message.content }}{% else %}"
    "{% for part in message.content %}"
    "{% if part.type == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
PATCH, MERGE, TEMPORAL = 16, 2, 2


def build_qwen3_vl_reranker(out: Path, *, seed: int = 0) -> Path:
    import torch
    from tokenizers import AddedToken
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from rerankd.devtools.synthetic_llm import _spread_answer_rows

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS]
    )
    ids = {t: tokenizer.token_to_id(t) for t in VISION_TOKENS}
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": tokenizer.get_vocab_size(),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "initializer_range": 0.2,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": TEMPORAL,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0, 1],
            "initializer_range": 0.2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    model = Qwen3VLForConditionalGeneration(config)
    _spread_answer_rows(model, [tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")], seed)
    model.save_pretrained(str(out))
    save_qwen_tokenizer(out, tokenizer, 4096)
    _write_json(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    _write_json(
        out / "preprocessor_config.json",
        {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen3VLProcessor",
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
            "rescale_factor": 1 / 255,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "patch_size": PATCH,
            "merge_size": MERGE,
            "temporal_patch_size": TEMPORAL,
            "size": {"shortest_edge": 4 * 32 * 32, "longest_edge": 1800 * 32 * 32},
        },
    )
    return out


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2))
