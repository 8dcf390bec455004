"""Frame decoding and validation: protobuf Frame -> uint8 [H, W, 3] in the policy's frame size.

Everything a client can get wrong about a frame is caught here and raised as ``FrameError``
with a message that names the problem, so the servicer can answer INVALID_ARGUMENT for that one
request and carry on: bad input must never reach the model or take down another stream.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from semore_runtime.proto_gen.semore.v1 import policy_pb2

RAW_RGB8 = policy_pb2.Frame.RAW_RGB8
JPEG = policy_pb2.Frame.JPEG
PNG = policy_pb2.Frame.PNG
_PIL_FORMAT = {JPEG: "JPEG", PNG: "PNG"}

# A compressed frame is bounded by the message size limit, but a PNG can inflate enormously;
# refuse to decode anything bigger than this before allocating it.
MAX_DECODED_PIXELS = 4096 * 4096


class FrameError(ValueError):
    """The frame cannot be used; the message says why (sent back to the client verbatim)."""


class FrameDecoder:
    """Turns wire frames into policy-sized uint8 RGB arrays.

    ``resize`` chooses between rejecting frames of another size (the default: a silently
    resized camera image is a different observation than training saw) and resizing them.
    """

    def __init__(self, height: int, width: int, resize: bool = False) -> None:
        self.height = height
        self.width = width
        self.resize = resize
        self.shape = (height, width, 3)
        self._raw_bytes = height * width * 3

    def decode(self, frame: policy_pb2.Frame) -> np.ndarray:
        """Returns a read-only uint8 [H, W, 3] array or raises FrameError."""
        data = frame.data
        if not data:
            raise FrameError("frame is empty: data has 0 bytes")
        encoding = frame.encoding
        if encoding == RAW_RGB8:
            # The fast path: no copy, no Pillow. The size check comes first so a frame that is
            # merely of another size gets that message rather than a byte-count one.
            if frame.height == self.height and frame.width == self.width and len(data) == self._raw_bytes:
                return np.frombuffer(data, dtype=np.uint8).reshape(self.shape)
            return self._fit(self._decode_raw(frame))
        if encoding in _PIL_FORMAT:
            return self._fit(self._decode_image(frame, _PIL_FORMAT[encoding]))
        if encoding == policy_pb2.Frame.ENCODING_UNSPECIFIED:
            raise FrameError("frame encoding is not set (ENCODING_UNSPECIFIED): use RAW_RGB8, JPEG or PNG")
        raise FrameError(f"unknown frame encoding {encoding}: use RAW_RGB8 (1), JPEG (2) or PNG (3)")

    def _decode_raw(self, frame: policy_pb2.Frame) -> np.ndarray:
        h, w = frame.height, frame.width
        if h == 0 or w == 0:
            raise FrameError(f"RAW_RGB8 frame needs height and width, got {h}x{w}")
        expected = h * w * 3
        if len(frame.data) != expected:
            raise FrameError(
                f"RAW_RGB8 frame of {h}x{w} needs {h}*{w}*3 = {expected} bytes, got {len(frame.data)}"
            )
        if h * w > MAX_DECODED_PIXELS:
            raise FrameError(f"frame of {h}x{w} exceeds the {MAX_DECODED_PIXELS}-pixel limit")
        return np.frombuffer(frame.data, dtype=np.uint8).reshape(h, w, 3)

    def _decode_image(self, frame: policy_pb2.Frame, fmt: str) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(frame.data), formats=[fmt])
                w, h = image.size
                if w * h > MAX_DECODED_PIXELS:
                    raise FrameError(f"{fmt} frame of {h}x{w} exceeds the {MAX_DECODED_PIXELS}-pixel limit")
                image.load()
                if image.mode != "RGB":
                    image = image.convert("RGB")
        except FrameError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for bad data
            raise FrameError(f"corrupt {fmt} frame: cannot decode {len(frame.data)} bytes ({exc})") from exc
        if (frame.height and frame.height != h) or (frame.width and frame.width != w):
            raise FrameError(f"{fmt} frame header says {frame.height}x{frame.width} but the image is {h}x{w}")
        return np.asarray(image, dtype=np.uint8)

    def _fit(self, array: np.ndarray) -> np.ndarray:
        h, w = array.shape[:2]
        if (h, w) == (self.height, self.width):
            return array
        if not self.resize:
            raise FrameError(
                f"frame is {h}x{w} (height x width) but the policy expects {self.height}x{self.width}; "
                "send frames of that size or start semore-serve with --resize"
            )
        # Bilinear with antialiasing (Pillow's reducing filter), the usual camera-downscale choice.
        image = Image.fromarray(np.ascontiguousarray(array))
        return np.asarray(image.resize((self.width, self.height), Image.Resampling.BILINEAR), dtype=np.uint8)
