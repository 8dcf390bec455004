"""Teacher models with random weights, saved the way real checkpoints are saved.

No model hub is reachable here or in CI, so tests and the teacher-cost benchmark build open_clip
and Qwen2-VL models with random weights, write them to disk like downloaded ones, and load them
through the teachers' real loading code. Their answers are noise; shapes, code paths and (at
full size) compute cost are the real ones. The tokenizer is trained on the spot from a small
corpus, since the real one cannot be downloaded either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# The tokens Qwen2-VL's processor, chat template and generation look up by name.
SPECIAL_TOKENS = [
    "<unk>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CORPUS = [
    "1. cart\n2. pole\n3. ball\n",
    "- cup, - road, - car, - finger, - target\n",
    "the cart moves the pole; the ball rolls into the cup.\n",
    "a car drives on the road; the finger reaches the target.\n",
    "user assistant system: list the objects that matter in this image, one per line.\n",
    "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz .,;:!?'\"()[]-_/\n",
]
# Qwen2-VL's chat format, reduced to what the teacher sends: text and image parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-VL sizes. "2b" is Qwen2-VL-2B-Instruct's architecture (its published config.json).
QWEN2_VL = {
    "tiny": {
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            # head_dim 16: the temporal/height/width rotary sections must sum to head_dim / 2.
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        },
        "vision": {"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2},
    },
    "2b": {
        "text": {
            "vocab_size": 151936,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        },
        "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4},
    },
}

# A ViT-CLIP a few hundred kB big; the text tower keeps open_clip's bundled BPE vocabulary.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_random_clip(folder: Path, model_cfg: dict[str, Any] | None = None, seed: int = 0) -> str:
    """A random open_clip model as a `local-dir:` folder; returns the `teacher.clip.model` value."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg or TINY_CLIP}))
    name = f"local-dir:{folder}"
    torch.manual_seed(seed)
    model = open_clip.create_model(name)  # the folder holds no weights yet: random init
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return name


def _tokenizer():
    """A BPE trained here; Metaspace keeps every token printable, unlike byte-level pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    bpe.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=256, special_tokens=SPECIAL_TOKENS, show_progress=False)
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def save_random_qwen2_vl(
    folder: Path, size: str = "tiny", image_pixels: int = 56 * 56, dtype: torch.dtype = torch.float32
) -> Path:
    """A random Qwen2-VL and its processor, saved with save_pretrained; returns the folder.

    image_pixels fixes the image size the processor feeds the model (56 x 56: 4 x 4 patches of
    14 px, 4 tokens after the 2 x 2 merge; 224 x 224: 64 tokens).
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _tokenizer()
    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS), strict=True))
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels),
        video_processor=Qwen2VLVideoProcessor(min_pixels=image_pixels, max_pixels=image_pixels),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    sizes = QWEN2_VL[size]
    text = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 4096,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        **sizes["text"],
    }
    vision = {
        "hidden_size": text["hidden_size"],  # the patch merger projects into the text model's width
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        **sizes["vision"],
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).to(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
