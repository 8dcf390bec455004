"""The paper's teacher: a VLM names the objects that matter, CLIP finds them in the pixels.

The VLM is the expensive part (a 2B model generating text), and what matters in a task changes
slowly, so it runs at a configurable rate (once per episode, or every N observations); the
frames in between reuse its latest phrases, and CLIP grounds them in every frame. Answers are
cached on disk, so a rerun makes no VLM calls.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from training.config import TeacherConfig
from training.teachers.answer_cache import AnswerCache, answer_key
from training.teachers.base import Labels, Observation
from training.teachers.clip import ClipTeacher
from training.teachers.phrases import default_prompt, parse_phrases, task_knowledge
from training.teachers.vlm import VisionLanguageModel


class VlmClipTeacher(ClipTeacher):
    """The `clip` teacher with its phrases chosen by a VLM, frame by frame, instead of by the config."""

    kind = "vlm-clip"

    def __init__(self, config: TeacherConfig, env_id: str, device: torch.device) -> None:
        super().__init__(config, device)
        vlm = config.vlm
        self.vlm = VisionLanguageModel(vlm, device)
        self.prompt = vlm.prompt or default_prompt(env_id)
        self.fallback = config.phrases or list(task_knowledge(env_id).phrases)
        self.cache = AnswerCache(vlm.cache) if vlm.cache else None
        self._settings = vlm.generation.model_dump() | {"image_size": vlm.image_size}
        self.phrases = list(self.fallback)  # the latest answer's, used until the next query
        self.cache_hits = 0  # queries answered from disk; the others went to the VLM (vlm.calls)
        self.answers: deque[list[str]] = deque(maxlen=1000)  # the latest parsed answers, in order

    def stats(self) -> dict[str, int]:
        calls = self.vlm.calls
        return {"vlm_queries": self.cache_hits + calls, "vlm_cache_hits": self.cache_hits, "vlm_calls": calls}

    def _asks(self, observation: Observation) -> bool:
        every = self.config.vlm.every
        return observation.index == 0 if every == "episode" else observation.index % every == 0

    def _answers(self, frames: list[np.ndarray]) -> list[str]:
        """One answer per frame: cached ones from disk, the rest from one batched VLM call."""
        keys = [answer_key(f, self.prompt, self.vlm.name, self._settings) for f in frames]
        known = self.cache.get(keys) if self.cache is not None else {}
        self.cache_hits += sum(k in known for k in keys)
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            fresh = self.vlm.ask([frames[i] for i in missing], self.prompt)
            new = {keys[i]: answer for i, answer in zip(missing, fresh, strict=True)}
            if self.cache is not None:
                self.cache.put(list(new.items()), self.vlm.name, self.prompt)
            known |= new
        return [known[k] for k in keys]

    def label(self, observations: list[Observation]) -> Labels:
        asked = [o for o in observations if self._asks(o)]
        answers = iter(self._answers([o.capture for o in asked]))
        # Each observation takes the phrases of the latest query at or before it.
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, observation in enumerate(observations):
            if self._asks(observation):
                parsed = parse_phrases(next(answers), self.config.vlm.max_phrases)
                self.answers.append(parsed)
                self.phrases = parsed or list(self.fallback)
            groups.setdefault(tuple(self.phrases), []).append(i)

        frames = np.stack([o.capture for o in observations])
        m = self.map_size
        maps = np.empty((len(observations), m, m), np.uint8)
        embeddings = (
            np.empty((len(observations), self.embedding_dim), np.float16) if self.embedding_dim else None
        )
        for phrases, rows in groups.items():
            labels = self.grounder.ground(frames[rows], list(phrases))
            maps[rows] = labels.maps
            if embeddings is not None:
                embeddings[rows] = labels.embeddings
        return Labels(maps, embeddings)
