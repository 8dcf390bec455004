"""The VLM answer cache: persistent, and keyed by everything that changes an answer."""

import numpy as np

from training.teachers.answer_cache import AnswerCache, answer_key

FRAME = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
SETTINGS = {"max_new_tokens": 8}


def test_answers_survive_reopening(tmp_path):
    path = tmp_path / "sub" / "answers.sqlite"
    key = answer_key(FRAME, "list objects", "qwen", SETTINGS)
    cache = AnswerCache(path)
    cache.put([(key, "cart, pole")], "qwen", "list objects")
    cache.close()
    reopened = AnswerCache(path)
    assert reopened.get([key, "missing"]) == {key: "cart, pole"}
    assert len(reopened) == 1


def test_the_key_changes_with_frame_prompt_model_and_settings():
    base = answer_key(FRAME, "p", "m", SETTINGS)
    other_frame = FRAME.copy()
    other_frame[0, 0, 0] += 1
    assert base == answer_key(FRAME.copy(), "p", "m", dict(SETTINGS))
    assert base != answer_key(other_frame, "p", "m", SETTINGS)
    assert base != answer_key(FRAME.reshape(2, 8, 3), "p", "m", SETTINGS)
    assert base != answer_key(FRAME, "q", "m", SETTINGS)
    assert base != answer_key(FRAME, "p", "n", SETTINGS)
    assert base != answer_key(FRAME, "p", "m", {"max_new_tokens": 9})


def test_many_keys_at_once(tmp_path):
    cache = AnswerCache(tmp_path / "a.sqlite")
    rows = [(f"k{i}", f"answer {i}") for i in range(1200)]
    cache.put(rows, "m", "p")
    assert cache.get([k for k, _ in rows]) == dict(rows)
