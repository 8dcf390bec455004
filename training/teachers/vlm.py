"""A transformers vision-language model that answers one prompt about many frames at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from training.config import VlmConfig
from training.teachers.loading import ModelMissingError, hub_cache_dir, local_only


class VisionLanguageModel:
    """Any image-text-to-text model transformers can load, behind one batched `ask`.

    The `vlm-clip` teacher asks which objects matter in a frame; answering a whole batch of frames in
    one `generate` call keeps the VLM's share of a training run small, and loading strictly from
    disk (by default) makes a missing model one clear error instead of a stalled download.
    """

    def __init__(self, config: VlmConfig, device: torch.device) -> None:
        self.name = config.model
        self.image_size = config.image_size
        self.generation = config.generation
        self.device = device
        self.calls = 0
        local = local_only(config.local_files_only)
        try:
            self.processor = AutoProcessor.from_pretrained(config.model, local_files_only=local)
            self.model = AutoModelForImageTextToText.from_pretrained(
                config.model,
                local_files_only=local,
                dtype=torch.float16 if device.type == "cuda" else torch.float32,
            )
        except (OSError, EntryNotFoundError, HFValidationError):
            raise ModelMissingError(
                "VLM",
                config.model,
                looked_in=f"the local folder {Path(config.model).absolute()} and the Hugging Face cache {hub_cache_dir()}",
                fetch=f"hf download {config.model}",
            ) from None
        self.model.to(device).eval()
        # Decoder-only generation continues from the last position, so pads must sit on the left.
        self.processor.tokenizer.padding_side = "left"

    def ask(self, frames: Sequence[np.ndarray], prompt: str) -> list[str]:
        """One answer per frame ([H, W, 3] uint8 RGB), generated in ONE batched generate() call."""
        if not frames:
            return []
        images = [
            Image.fromarray(np.ascontiguousarray(frame)).resize(
                (self.image_size, self.image_size), Image.BICUBIC
            )
            for frame in frames
        ]
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(
            text=[text] * len(images), images=images, padding=True, return_tensors="pt"
        ).to(self.device, dtype=self.model.dtype)
        sampling = (
            {"temperature": self.generation.temperature, "top_p": self.generation.top_p}
            if self.generation.do_sample
            else {}
        )
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.generation.max_new_tokens,
                do_sample=self.generation.do_sample,
                **sampling,
            )
        self.calls += len(images)
        answers = self.processor.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [answer.strip() for answer in answers]
