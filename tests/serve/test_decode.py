"""FrameDecoder: every way a frame can be wrong gets a FrameError that names the problem."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from semore_runtime.proto_gen.semore.v1 import policy_pb2
from serve.decode import FrameDecoder, FrameError
from tests.helpers.serving import random_frames, raw_frame

Frame = policy_pb2.Frame


def encoded(frame: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def frame() -> np.ndarray:
    return random_frames(1, seed=3, height=32, width=32)[0]  # the decoder tests are 32x32 throughout


def test_raw_roundtrip_is_exact(frame):
    out = FrameDecoder(32, 32).decode(raw_frame(frame))
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out, frame)


def test_png_is_lossless_and_jpeg_close(frame):
    decoder = FrameDecoder(32, 32)
    png = decoder.decode(Frame(data=encoded(frame, "PNG"), encoding=Frame.PNG))
    np.testing.assert_array_equal(png, frame)
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 32, axis=0).repeat(3, axis=2)
    jpeg = decoder.decode(
        Frame(data=encoded(smooth, "JPEG", quality=95), height=32, width=32, encoding=Frame.JPEG)
    )
    assert jpeg.shape == (32, 32, 3) and np.abs(jpeg.astype(int) - smooth).mean() < 3


def test_grayscale_png_becomes_rgb():
    gray = np.full((32, 32), 7, dtype=np.uint8)
    out = FrameDecoder(32, 32).decode(Frame(data=encoded(gray, "PNG"), encoding=Frame.PNG))
    assert out.shape == (32, 32, 3) and (out == 7).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: Frame(data=b"", height=32, width=32, encoding=Frame.RAW_RGB8), "empty"),
        (lambda f: Frame(data=f.tobytes(), height=32, width=32), "ENCODING_UNSPECIFIED"),
        (lambda f: Frame(data=f.tobytes(), height=32, width=32, encoding=9), "unknown frame encoding 9"),
        (
            lambda f: Frame(data=f.tobytes()[:-1], height=32, width=32, encoding=Frame.RAW_RGB8),
            "3072 bytes, got 3071",
        ),
        (lambda f: Frame(data=f.tobytes(), encoding=Frame.RAW_RGB8), "needs height and width"),
        (lambda f: raw_frame(f[:16, :16]), "frame is 16x16"),
        (lambda f: Frame(data=b"\xff\xd8\xff\xe0garbage", encoding=Frame.JPEG), "corrupt JPEG"),
        (lambda f: Frame(data=encoded(f, "PNG")[:60], encoding=Frame.PNG), "corrupt PNG"),
        (
            lambda f: Frame(data=encoded(f, "PNG"), encoding=Frame.JPEG),
            "corrupt JPEG",
        ),  # PNG bytes sent as JPEG
        (
            lambda f: Frame(data=encoded(f, "PNG"), height=30, width=32, encoding=Frame.PNG),
            "header says 30x32",
        ),
        (lambda f: Frame(data=encoded(f[:20], "PNG"), encoding=Frame.PNG), "frame is 20x32"),
    ],
    ids=[
        "empty",
        "unspecified",
        "unknown",
        "byte-count",
        "no-dims",
        "wrong-size",
        "corrupt-jpeg",
        "truncated-png",
        "png-as-jpeg",
        "header-mismatch",
        "png-wrong-size",
    ],
)
def test_bad_frames_name_the_problem(frame, make, message):
    with pytest.raises(FrameError, match=message):
        FrameDecoder(32, 32).decode(make(frame))


def test_resize_only_when_asked(frame):
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)  # 64x64
    with pytest.raises(FrameError, match="--resize"):
        FrameDecoder(32, 32).decode(raw_frame(big))
    out = FrameDecoder(32, 32, resize=True).decode(raw_frame(big))
    assert out.shape == (32, 32, 3)
    out_png = FrameDecoder(32, 32, resize=True).decode(Frame(data=encoded(big, "PNG"), encoding=Frame.PNG))
    np.testing.assert_array_equal(out, out_png)


def test_decompression_bomb_is_refused():
    huge = Image.new("L", (5000, 5000))
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000  # tiny on the wire...
    with pytest.raises(FrameError, match="pixel limit"):  # ...but refused before it is inflated
        FrameDecoder(32, 32, resize=True).decode(Frame(data=buffer.getvalue(), encoding=Frame.PNG))
