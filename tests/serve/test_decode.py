"""FrameDecoder: every way a frame can be wrong gets a FrameError that names the problem."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest

from semore_runtime.proto_gen.semore.v1 import policy_pb2
from serve.decode import MAX_DECODE_PIXELS, FrameDecoder, FrameError
from tests.helpers.serving import encoded, png_bomb, random_frames, raw_frame

Frame = policy_pb2.Frame


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
    ("make", "message", "reason"),
    [
        (lambda f: Frame(data=b"", height=32, width=32, encoding=Frame.RAW_RGB8), "empty", "empty"),
        (lambda f: Frame(data=f.tobytes(), height=32, width=32), "ENCODING_UNSPECIFIED", "encoding"),
        (
            lambda f: Frame(data=f.tobytes(), height=32, width=32, encoding=9),
            "unknown frame encoding 9",
            "encoding",
        ),
        (
            lambda f: Frame(data=f.tobytes()[:-1], height=32, width=32, encoding=Frame.RAW_RGB8),
            "3072 bytes, got 3071",
            "malformed",
        ),
        (lambda f: Frame(data=f.tobytes(), encoding=Frame.RAW_RGB8), "needs height and width", "malformed"),
        (lambda f: raw_frame(f[:16, :16]), "frame is 16x16", "size"),
        (lambda f: Frame(data=b"\xff\xd8\xff\xe0garbage", encoding=Frame.JPEG), "corrupt JPEG", "corrupt"),
        (lambda f: Frame(data=encoded(f, "PNG")[:60], encoding=Frame.PNG), "corrupt PNG", "corrupt"),
        (
            lambda f: Frame(data=encoded(f, "PNG"), encoding=Frame.JPEG),
            "corrupt JPEG",
            "corrupt",
        ),  # PNG bytes sent as JPEG
        (
            lambda f: Frame(data=encoded(f, "PNG"), height=30, width=32, encoding=Frame.PNG),
            "header says 30x32",
            "malformed",
        ),
        (lambda f: Frame(data=encoded(f[:20], "PNG"), encoding=Frame.PNG), "frame is 20x32", "size"),
        (lambda f: Frame(data=png_bomb(32, 32), encoding=Frame.PNG), "16-bit RGBA", "sample_format"),
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
        "png-16-bit",
    ],
)
def test_bad_frames_name_the_problem(frame, make, message, reason):
    with pytest.raises(FrameError, match=message) as info:
        FrameDecoder(32, 32).decode(make(frame))
    assert info.value.reason == reason


def test_resize_only_when_asked(frame):
    big = np.repeat(np.repeat(frame, 2, axis=0), 2, axis=1)  # 64x64
    with pytest.raises(FrameError, match="--resize"):
        FrameDecoder(32, 32).decode(raw_frame(big))
    out = FrameDecoder(32, 32, resize=True).decode(raw_frame(big))
    assert out.shape == (32, 32, 3)
    out_png = FrameDecoder(32, 32, resize=True).decode(Frame(data=encoded(big, "PNG"), encoding=Frame.PNG))
    np.testing.assert_array_equal(out, out_png)


@pytest.mark.parametrize("resize", [False, True], ids=["policy-size", "resize"])
def test_a_bomb_is_refused_from_its_header(resize):
    bomb = png_bomb()  # 4096x4096 RGBA16: 128 MiB of pixels in ~130 KB
    assert len(bomb) < 140_000
    decoder = FrameDecoder(32, 32, resize=resize)
    message, reason = {
        False: ("frame is 4096x4096 (height x width) but the policy expects 32x32", "size"),
        True: (
            f"frame is 4096x4096 = 16777216 pixels, over the limit of {MAX_DECODE_PIXELS} pixels",
            "too_large",
        ),
    }[resize]
    # Its image data cut off: the same refusal, so nothing past the 33-byte header was read.
    for data in (bomb, bomb[:33]):
        with pytest.raises(FrameError, match=re.escape(message)) as info:
            decoder.decode(Frame(data=data, encoding=Frame.PNG))
        assert info.value.reason == reason


def test_max_pixels_bounds_what_resize_decodes(frame):
    decoder = FrameDecoder(32, 32, resize=True, max_pixels=64 * 64)
    at_limit = np.zeros((64, 64, 3), np.uint8)
    for ok in (raw_frame(at_limit), Frame(data=encoded(at_limit, "PNG"), encoding=Frame.PNG)):
        assert decoder.decode(ok).shape == (32, 32, 3)
    over = np.zeros((65, 64, 3), np.uint8)
    for bad in (raw_frame(over), Frame(data=encoded(over, "JPEG"), encoding=Frame.JPEG)):
        with pytest.raises(FrameError, match="65x64 = 4160 pixels, over the limit of 4096 pixels"):
            decoder.decode(bad)


@pytest.mark.parametrize("chunk", [b"IHDR", b"IDAT", b"IEND"])
def test_a_png_chunk_with_a_bad_crc_is_refused(frame, chunk):
    data = bytearray(encoded(frame, "PNG"))
    start = data.index(chunk) - 4
    (length,) = struct.unpack_from(">I", data, start)
    data[start + 8 + length] ^= 0x01  # one bit of the chunk's CRC
    with pytest.raises(FrameError, match=f"chunk b'{chunk.decode()}' at byte {start} fails its CRC") as info:
        FrameDecoder(32, 32).decode(Frame(data=bytes(data), encoding=Frame.PNG))
    assert info.value.reason == "checksum"


def _with_sof(jpeg: bytes, precision: int = 8, height: int = 32, width: int = 32) -> bytes:
    """``jpeg`` (baseline) with its frame header (SOF0) declaring these instead."""
    out = bytearray(jpeg)
    struct.pack_into(">BHH", out, out.index(b"\xff\xc0") + 4, precision, height, width)
    return bytes(out)


def test_jpeg_is_judged_by_its_frame_header(frame):
    jpeg = encoded(frame, "JPEG")
    sof, scan = jpeg.index(b"\xff\xc0"), jpeg.index(b"\xff\xda")
    (length,) = struct.unpack_from(">H", jpeg, sof + 2)
    # A second SOF: Pillow would take the size from the last one, the check sees the first.
    second_sof = _with_sof(jpeg, height=8000, width=8000)[sof : sof + 2 + length]
    cases = {
        "too_large": (_with_sof(jpeg, height=8000, width=8000), "8000x8000 = 64000000 pixels"),
        "sample_format": (_with_sof(jpeg, precision=12), "12-bit samples"),
        "corrupt": (jpeg[:scan] + second_sof + jpeg[scan:], "a second or short frame header"),
    }
    decoder = FrameDecoder(32, 32, resize=True)
    for reason, (data, message) in cases.items():
        with pytest.raises(FrameError, match=message) as info:
            decoder.decode(Frame(data=data, encoding=Frame.JPEG))
        assert info.value.reason == reason
