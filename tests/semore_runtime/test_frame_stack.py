import numpy as np
import pytest

from semore_runtime import FrameStack


def frame(value: int) -> np.ndarray:
    return np.full((4, 5, 3), value, dtype=np.uint8)


def test_first_frame_fills_the_stack_then_frames_shift_in_oldest_first():
    stack = FrameStack(3, (4, 5, 3))
    first = stack.push(frame(1))
    assert first.shape == (3, 4, 5, 3) and first.dtype == np.uint8
    assert [s[0, 0, 0] for s in first] == [1, 1, 1]
    stack.push(frame(2))
    assert [s[0, 0, 0] for s in stack.push(frame(3))] == [1, 2, 3]
    assert [s[0, 0, 0] for s in stack.push(frame(4))] == [2, 3, 4]


def test_reset_starts_a_new_episode():
    stack = FrameStack(2, (4, 5, 3))
    stack.push(frame(1))
    stack.push(frame(2))
    stack.reset()
    assert [s[0, 0, 0] for s in stack.push(frame(9))] == [9, 9]


def test_returned_stack_is_a_copy():
    stack = FrameStack(2, (4, 5, 3))
    kept = stack.push(frame(1))
    stack.push(frame(2))
    assert kept[1, 0, 0, 0] == 1


def test_bad_frames_are_rejected():
    stack = FrameStack(2, (4, 5, 3))
    with pytest.raises(ValueError, match="shape"):
        stack.push(np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        stack.push(np.zeros((4, 5, 3), np.float32))
