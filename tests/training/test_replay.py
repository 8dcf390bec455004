import numpy as np
import pytest

from training.replay import ReplayBuffer
from training.teachers import Labels


def frame(i: int) -> np.ndarray:
    return np.full((2, 2, 3), i, dtype=np.uint8)


def fill(buffer: ReplayBuffer, episodes: list[int], terminal_last: bool = False) -> None:
    """Episodes of the given lengths; frame values count up globally, rewards = 1 per step."""
    value = 0
    for length in episodes:
        buffer.add_first(frame(value))
        value += 1
        for step in range(length):
            last = step == length - 1
            buffer.add(np.array([value], np.float32), 1.0, frame(value), terminal=terminal_last and last)
            value += 1


def make(capacity=100, k=3, n=3, gamma=0.5):
    return ReplayBuffer(capacity, (2, 2, 3), 1, frame_stack=k, n_step=n, gamma=gamma, map_size=None)


def test_frames_are_stored_once():
    buffer = make()
    fill(buffer, [10])
    assert len(buffer) == 11
    assert buffer.frames.shape == (100, 2, 2, 3)


def test_stacks_fill_with_the_episode_first_frame():
    buffer = make()
    fill(buffer, [5, 5])  # episode 2 starts at absolute index 6 with frame value 6
    stacks = buffer.stack(np.array([0, 1, 6, 7, 9]))
    assert stacks[:, :, 0, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [6, 6, 6], [6, 6, 7], [7, 8, 9]]


def test_n_step_returns_and_bootstrapping():
    buffer = make(n=3, gamma=0.5)
    fill(buffer, [6])
    rng = np.random.default_rng(0)
    batch = buffer.sample(64, rng)
    obs_last = batch.obs[:, -1, 0, 0, 0].astype(int)
    next_last = batch.next_obs[:, -1, 0, 0, 0].astype(int)
    n_eff = next_last - obs_last
    assert set(n_eff.tolist()) <= {1, 2, 3}
    # Near the time limit the window shortens; the return and discount follow it.
    np.testing.assert_allclose(batch.reward, (1 - 0.5**n_eff) / (1 - 0.5))
    np.testing.assert_allclose(batch.discount, 0.5**n_eff)
    np.testing.assert_array_equal(n_eff, np.minimum(3, 6 - obs_last))
    assert batch.actions.shape == (64, 3, 1)
    np.testing.assert_allclose(batch.action[:, 0], obs_last + 1)


def test_terminal_states_stop_bootstrapping():
    buffer = make(n=3)
    fill(buffer, [4], terminal_last=True)
    batch = buffer.sample(64, np.random.default_rng(1))
    reaches_end = batch.next_obs[:, -1, 0, 0, 0] == 4
    assert reaches_end.any()
    assert (batch.discount[reaches_end] == 0).all()
    assert (batch.discount[~reaches_end] > 0).all()


def test_ring_buffer_never_returns_overwritten_frames():
    buffer = make(capacity=20, k=3, n=2)
    fill(buffer, [7] * 6)
    assert buffer.size == 48 and len(buffer) == 20
    batch = buffer.sample(256, np.random.default_rng(2))
    values = batch.obs[:, :, 0, 0, 0].astype(int)
    assert values.min() >= 48 - 20
    assert (np.diff(values, axis=1) >= 0).all()  # stacks stay in order, within one episode


def test_state_round_trip(tmp_path):
    buffer = make()
    fill(buffer, [5, 3])
    buffer.save(tmp_path / "replay.npz")
    restored = make()
    restored.load(tmp_path / "replay.npz")
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a, b = buffer.sample(8, rng_a), restored.sample(8, rng_b)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.reward, b.reward)


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="no transition"):
        make().sample(4, np.random.default_rng(0))


def test_memory_per_transition_is_one_frame_plus_small_fields():
    buffer = ReplayBuffer(1000, (84, 84, 3), 6, 3, 3, 0.99, map_size=21)
    per_transition = buffer.nbytes / 1000
    assert 84 * 84 * 3 < per_transition < 84 * 84 * 3 + 21 * 21 + 64


def test_only_labelled_frames_are_sampled_and_labels_follow_their_frames():
    buffer = ReplayBuffer(8, (2, 2, 3), 1, frame_stack=2, n_step=1, gamma=0.5, map_size=2, embedding_dim=3)
    fill(buffer, [11])  # absolute frames 0..11; the buffer keeps 4..11
    labelled = np.arange(2, 9)  # 2 and 3 were overwritten before their labels came
    maps = np.repeat(labelled.astype(np.uint8)[:, None, None], 4, axis=1).reshape(-1, 2, 2)
    buffer.set_labels(labelled, Labels(maps, np.repeat(labelled[:, None], 3, 1).astype(np.float16)))
    batch = buffer.sample(200, np.random.default_rng(0))
    newest = batch.obs[:, -1, 0, 0, 0]
    # 4's stack would need the overwritten 3; 9 and later have no label yet.
    assert set(newest.tolist()) == {5, 6, 7, 8}
    np.testing.assert_array_equal(batch.knowledge_map[:, 0, 0], newest)
    np.testing.assert_array_equal(batch.knowledge_embedding[:, 0], newest)


def test_sampling_with_no_labelled_frame_is_a_clear_error():
    buffer = ReplayBuffer(10, (2, 2, 3), 1, frame_stack=2, n_step=1, gamma=0.5, map_size=2)
    fill(buffer, [5])
    with pytest.raises(ValueError, match="no labelled transition"):
        buffer.sample(4, np.random.default_rng(0))


def test_foreground_masks_are_kept_as_bits_and_gathered_for_every_frame_of_a_stack():
    buffer = ReplayBuffer(20, (2, 2, 3), 1, frame_stack=3, n_step=1, gamma=0.5, map_size=2, foreground=True)
    fill(buffer, [6])  # frames 0..6 of one episode
    t = np.arange(7)
    foreground = np.zeros((7, 2, 2), bool)
    foreground[t, t % 2, t // 4] = True  # each frame its own pattern
    buffer.set_labels(t, Labels(np.zeros((7, 2, 2), np.uint8), foreground=foreground))
    assert buffer.foreground.shape == (20, 1)  # 4 pixels in one byte
    batch = buffer.sample(50, np.random.default_rng(0))
    newest = batch.obs[:, -1, 0, 0, 0].astype(int)
    stack_frames = np.maximum(newest[:, None] + np.arange(-2, 1), 0)  # the first frame fills the gap
    np.testing.assert_array_equal(batch.foreground, foreground[stack_frames])
