"""Grounding phrases in pixels with open_clip, MaskCLIP style, and the `clip` teacher built on it.

CLIP's image embedding says what is in a frame, not where. MaskCLIP (Zhou et al., 2022) reads
dense features from the last block's value path instead: each patch token goes through the
value projection and the attention's output projection (no query-key mixing, which smears
patches together), then the final norm and projection into the joint space, where its cosine
similarity to a phrase's text embedding says how much that patch looks like the phrase. A
softmax over the phrases plus background prompts per patch turns similarities into shares,
and a patch's knowledge value is the share the phrases win.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.config import ClipConfig, TeacherConfig
from training.teachers.base import Labels, Observation, Teacher
from training.teachers.loading import ModelMissingError, hub_cache_dir, local_only

PROMPT_TEMPLATE = "a photo of a {}."


def phrase_relevance(dense: torch.Tensor, text: torch.Tensor, n_phrases: int, scale: float) -> torch.Tensor:
    """Per-patch share of the first n_phrases classes: dense [B, N, D], text [C, D] -> [B, N] in [0, 1]."""
    similarity = F.normalize(dense.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    return torch.softmax(scale * similarity, dim=-1)[..., :n_phrases].sum(-1)


def _fetch_command(config: ClipConfig) -> str:
    return (
        f"python -c \"import open_clip; open_clip.create_model('{config.model}', "
        f"pretrained='{config.pretrained}')\""
    )


def _cached_weights(config: ClipConfig, pretrained_cfg: dict[str, Any]) -> str:
    """The local file of a pretrained tag, found without touching the network."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if hub := pretrained_cfg.get("hf_hub"):
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        names = ["open_clip_model.safetensors"] if filename == "open_clip_pytorch_model.bin" else []
        for name in [*names, filename]:
            try:
                return hf_hub_download(repo, name, cache_dir=config.cache_dir, local_files_only=True)
            except LocalEntryNotFoundError:
                continue
        looked_in = f"the Hugging Face cache {config.cache_dir or hub_cache_dir()} for {repo}"
    else:  # an URL-only tag: open_clip keeps those under cache_dir or ~/.cache/clip
        folder = Path(config.cache_dir or "~/.cache/clip").expanduser()
        candidate = folder / os.path.basename(pretrained_cfg["url"])
        if candidate.is_file():
            return str(candidate)
        looked_in = str(candidate)
    raise ModelMissingError(
        "CLIP model", f"{config.model} ({config.pretrained})", looked_in, _fetch_command(config)
    )


def load_clip(config: ClipConfig, device: torch.device, half: bool) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer), without network access unless the config allows it.

    `model` is an open_clip architecture with `pretrained` a tag or a checkpoint file, or
    `local-dir:<folder>` for a folder holding open_clip_config.json and the weights.
    """
    import open_clip

    weights, pretrained_cfg = None, {}
    if config.model.startswith("hf-hub:") and local_only(config.local_files_only):
        raise ValueError(
            f"teacher.clip.model: '{config.model}' downloads at load time; fetch it and use "
            "local-dir:<folder>, or set teacher.clip.local_files_only: false"
        )
    if ":" not in config.model:
        if config.model not in open_clip.list_models():
            raise ValueError(f"teacher.clip.model: '{config.model}' is not an open_clip architecture")
        if config.pretrained is not None and Path(config.pretrained).expanduser().is_file():
            weights = str(Path(config.pretrained).expanduser())
        elif config.pretrained is not None:
            pretrained_cfg = open_clip.get_pretrained_cfg(config.model, config.pretrained)
            if not pretrained_cfg:
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(config.model))
                raise ValueError(
                    f"teacher.clip.pretrained: '{config.pretrained}' is neither a file nor a pretrained "
                    f"tag of {config.model} (tags: {tags})"
                )
            if local_only(config.local_files_only):
                weights = _cached_weights(config, pretrained_cfg)
            else:
                weights = open_clip.download_pretrained(pretrained_cfg, cache_dir=config.cache_dir)
    model = open_clip.create_model(
        config.model,
        pretrained=weights,
        precision="fp16" if half else "fp32",
        device=device,
        force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)),
        force_preprocess_cfg={k: pretrained_cfg[k] for k in ("mean", "std") if k in pretrained_cfg},
    )
    return model.eval().requires_grad_(False), open_clip.get_tokenizer(config.model)


class ClipGrounder:
    """Frames and phrases -> knowledge maps (and CLIP image embeddings), batched on the training device."""

    def __init__(self, config: ClipConfig, map_size: int, device: torch.device) -> None:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        half = config.precision == "fp16" or (config.precision == "auto" and device.type == "cuda")
        self.config, self.map_size, self.device = config, map_size, device
        self.dtype = torch.float16 if half else torch.float32
        self.model, self.tokenizer = load_clip(config, device, half)
        visual = self.model.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError(
                f"teacher.clip.model: '{config.model}' has no plain ViT image tower; MaskCLIP dense "
                "features need one (ViT-B-32, ViT-B-16, ViT-L-14, ...)"
            )
        if not isinstance(visual.transformer.resblocks[-1], ResidualAttentionBlock):
            raise ValueError(f"teacher.clip.model: '{config.model}' uses a custom attention block")
        self.visual = visual
        self.grid = visual.grid_size
        self.mean = torch.tensor(visual.preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(visual.preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / config.temperature if config.temperature else float(self.model.logit_scale.exp())
        self.embedding_dim: int = visual.output_dim
        self._text: dict[str, torch.Tensor] = {}

    def text_embeddings(self, phrases: list[str]) -> torch.Tensor:
        """[C, D] embeddings of the phrases, each encoded once per run."""
        missing = [p for p in dict.fromkeys(phrases) if p not in self._text]
        if missing:
            tokens = self.tokenizer([PROMPT_TEMPLATE.format(p) for p in missing]).to(self.device)
            with torch.inference_mode():
                encoded = self.model.encode_text(tokens).float()
            self._text.update(zip(missing, encoded, strict=True))
        return torch.stack([self._text[p] for p in phrases])

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """[B, H, W, 3] uint8 -> normalised [B, 3, S, S] at the model's input size."""
        x = torch.as_tensor(frames, device=self.device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=self.visual.image_size, mode="bilinear", align_corners=False)
        return ((x - self.mean) / self.std).to(self.dtype)

    def image_features(self, images: torch.Tensor, pooled: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(dense [B, N, D] MaskCLIP patch features, the [B, D] CLIP image embedding if `pooled`)."""
        visual = self.visual
        x = visual._embeds(images)
        batch_first = visual.transformer.batch_first
        if not batch_first:
            x = x.transpose(0, 1)
        blocks = visual.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x)
        last = blocks[-1]
        embedding = None
        if pooled:  # the last block run in full, as CLIP does, for the image embedding
            tokens = last(x)
            embedding = visual._pool(tokens.transpose(0, 1) if not batch_first else tokens)[0] @ visual.proj
        if not batch_first:
            x = x.transpose(0, 1)
        width = x.shape[-1]
        attn = last.attn
        values = F.linear(
            last.ln_1(x[:, 1:]), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :]
        )
        dense = visual.ln_post(last.ls_1(attn.out_proj(values))) @ visual.proj
        return dense, embedding

    @torch.inference_mode()
    def ground(self, frames: np.ndarray, phrases: list[str]) -> Labels:
        """Knowledge maps of [B, H, W, 3] frames for the phrases, and the frames' image embeddings."""
        background = [b for b in self.config.background if b not in phrases]
        dense, pooled = self.image_features(self.preprocess(frames), self.config.global_target)
        relevance = phrase_relevance(
            dense, self.text_embeddings(phrases + background), len(phrases), self.scale
        )
        grid = relevance.view(len(frames), 1, *self.grid)
        maps = F.interpolate(grid, size=(self.map_size, self.map_size), mode="bilinear", align_corners=False)
        maps = (255.0 * maps.clamp(0, 1)).round().to(torch.uint8)[:, 0].cpu().numpy()
        embeddings = None
        if self.config.global_target:
            embeddings = F.normalize(pooled.float(), dim=-1).to(torch.float16).cpu().numpy()
        return Labels(maps, embeddings)


class ClipTeacher(Teacher):
    """Fixed phrases from the task config, grounded by CLIP in every frame."""

    kind = "clip"

    def __init__(self, config: TeacherConfig, device: torch.device) -> None:
        super().__init__(config)
        self.grounder = ClipGrounder(config.clip, config.map_size, device)
        self.embedding_dim = self.grounder.embedding_dim if config.clip.global_target else None

    def label(self, observations: list[Observation]) -> Labels:
        return self.grounder.ground(np.stack([o.capture for o in observations]), self.config.phrases)
