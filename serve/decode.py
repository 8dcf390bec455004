"""Frame decoding and validation: protobuf Frame -> uint8 [H, W, 3] in the policy's frame size.

Everything a client can get wrong about a frame is caught here and raised as ``FrameError``
with a message that names the problem, so the servicer can answer INVALID_ARGUMENT for that one
request and carry on: bad input must never reach the model or take down another stream.

A compressed frame is judged by its header before a pixel is decoded. A 130 KB PNG can declare
4096x4096 RGBA16, which the old limit (16.7 M pixels of any depth) let through: Pillow spent
0.36-0.6 s inflating each into a 64 MiB image, and twenty of them left the server's RSS at
1.3 GB. So the declared size (PNG IHDR, JPEG SOF) must be the policy's frame (or, with
``resize``, at most ``max_pixels``) and the samples 8-bit before Pillow is called.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Literal

import numpy as np
from PIL import Image

from semore_runtime.proto_gen.semore.v1 import policy_pb2

RAW_RGB8 = policy_pb2.Frame.RAW_RGB8
JPEG = policy_pb2.Frame.JPEG
PNG = policy_pb2.Frame.PNG
_PIL_FORMAT = {JPEG: "JPEG", PNG: "PNG"}

# With resize on, the largest frame (height x width) decoded: a 4K UHD camera frame. A 4K PNG
# takes ~130 ms to decode and resize here, and two decode workers at it raised the server's peak
# RSS by 131 MB (RGBA: the image and its RGB conversion, each 4 bytes a pixel in Pillow).
MAX_DECODE_PIXELS = 3840 * 2160

# Why a frame was refused: the label of semore_refused_frames_total (a short, fixed set).
RefusalReason = Literal[
    "empty", "encoding", "malformed", "size", "too_large", "sample_format", "checksum", "corrupt"
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (name, the bit depths the PNG spec allows for it).
_PNG_COLOUR = {
    0: ("grey", (1, 2, 4, 8, 16)),
    2: ("RGB", (8, 16)),
    3: ("palette", (1, 2, 4, 8)),
    4: ("grey+alpha", (8, 16)),
    6: ("RGBA", (8, 16)),
}
# JPEG start-of-frame markers (SOF0-SOF15 without DHT C4, JPG C8 and DAC CC); SOS starts the scan.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_SOS = 0xDA
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: markers without a segment
_JPEG_COMPONENTS = frozenset({1, 3, 4})  # grey, colour (YCbCr or RGB), CMYK


class FrameError(ValueError):
    """The frame cannot be used; the message says why (sent back to the client verbatim).

    ``reason`` is one of ``RefusalReason``: what the metrics count it under.
    """

    def __init__(self, message: str, reason: RefusalReason = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def _corrupt(fmt: str, data: bytes, why: str) -> FrameError:
    return FrameError(f"corrupt {fmt} frame: cannot decode {len(data)} bytes ({why})", "corrupt")


def _png_header(data: bytes) -> tuple[int, int, str | None]:
    """The IHDR's (height, width, why its samples are refused or None). Reads 33 bytes."""
    if not data.startswith(_PNG_SIGNATURE):
        raise _corrupt("PNG", data, "no PNG signature")
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise _corrupt("PNG", data, "the first chunk is not a complete IHDR")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    name, depths = _PNG_COLOUR.get(colour, (None, ()))
    if width == 0 or height == 0 or depth not in depths:
        raise _corrupt("PNG", data, f"IHDR declares {height}x{width}, colour type {colour}, {depth}-bit")
    if depth > 8:
        return height, width, f"PNG frame has {depth}-bit {name} samples: only 8-bit frames are accepted"
    return height, width, None


def _check_png_chunks(data: bytes) -> None:
    """Checks every chunk's CRC up to IEND, so a damaged frame is refused instead of decoded.

    Pillow skips IDAT's CRC, so a PNG whose image chunk failed it was accepted. zlib.crc32 (which
    releases the GIL) makes this walk cost, measured on the busy 2-core machine, 5-8 us on a 7 KB
    48x48 frame (3-6% of its 125-220 us decode) and 0.5-1 ms on a 0.9 MB 640x480 noise frame
    (5-8% of its 11-13 ms decode).
    """
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise _corrupt("PNG", data, f"truncated: no IEND chunk after byte {pos}")
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length  # where the chunk's CRC starts
        kind = bytes(view[pos + 4 : pos + 8])
        if end + 4 > len(data):
            raise _corrupt("PNG", data, f"truncated: chunk {kind!r} at byte {pos} needs {length} bytes")
        if zlib.crc32(view[pos + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            raise FrameError(
                f"corrupt PNG frame: chunk {kind!r} at byte {pos} fails its CRC check (damaged in transit?)",
                "checksum",
            )
        if kind == b"IEND":
            return
        pos = end + 4


def _jpeg_header(data: bytes) -> tuple[int, int, str | None]:
    """The SOF segment's (height, width, why its samples are refused or None).

    Walks the segments up to the start of scan (a few dozen bytes past the APP segments). Two
    SOFs are refused: Pillow takes the size from the last one, the check here would see the first.
    """
    if not data.startswith(b"\xff\xd8"):
        raise _corrupt("JPEG", data, "no JPEG start-of-image marker")
    pos, sof = 2, None
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise _corrupt("JPEG", data, f"no marker at byte {pos} before the start of scan")
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker == _JPEG_SOS:
            break
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise _corrupt("JPEG", data, f"segment 0x{marker:02X} at byte {pos} has length {length}")
        if marker in _JPEG_SOF:
            if sof is not None or length < 8 or pos + 10 > len(data):
                raise _corrupt("JPEG", data, f"a second or short frame header (SOF) at byte {pos}")
            sof = struct.unpack_from(">BHHB", data, pos + 4)
        pos += 2 + length
    if sof is None:
        raise _corrupt("JPEG", data, "no frame header (SOF) before the start of scan")
    precision, height, width, components = sof
    if height == 0 or width == 0:
        raise _corrupt("JPEG", data, f"the frame header declares {height}x{width}")
    if precision != 8 or components not in _JPEG_COMPONENTS:
        return (
            height,
            width,
            f"JPEG frame has {components} components of {precision}-bit samples: only 8-bit grey, "
            "colour or CMYK frames are accepted",
        )
    return height, width, None


# What a compressed frame's header declares, read before any pixel is decoded.
_HEADER = {"PNG": _png_header, "JPEG": _jpeg_header}


class FrameDecoder:
    """Turns wire frames into policy-sized uint8 RGB arrays.

    ``resize`` chooses between rejecting frames of another size (the default: a silently
    resized camera image is a different observation than training saw) and resizing them, up
    to ``max_pixels`` (height x width) per frame.
    """

    def __init__(
        self, height: int, width: int, resize: bool = False, max_pixels: int = MAX_DECODE_PIXELS
    ) -> None:
        self.height = height
        self.width = width
        self.resize = resize
        self.max_pixels = max_pixels
        self.shape = (height, width, 3)
        self._raw_bytes = height * width * 3

    def decode(self, frame: policy_pb2.Frame) -> np.ndarray:
        """Returns a read-only uint8 [H, W, 3] array or raises FrameError."""
        data = frame.data  # read once and passed on: each read copies (1 ms for 4 MB here)
        if not data:
            raise FrameError("frame is empty: data has 0 bytes", "empty")
        encoding = frame.encoding
        if encoding == RAW_RGB8:
            # The fast path: no copy, no Pillow. The size check comes first so a frame that is
            # merely of another size gets that message rather than a byte-count one.
            if frame.height == self.height and frame.width == self.width and len(data) == self._raw_bytes:
                return np.frombuffer(data, dtype=np.uint8).reshape(self.shape)
            return self._decode_raw(frame, data)
        if encoding in _PIL_FORMAT:
            return self._decode_image(frame, data, _PIL_FORMAT[encoding])
        if encoding == policy_pb2.Frame.ENCODING_UNSPECIFIED:
            raise FrameError(
                "frame encoding is not set (ENCODING_UNSPECIFIED): use RAW_RGB8, JPEG or PNG", "encoding"
            )
        raise FrameError(
            f"unknown frame encoding {encoding}: use RAW_RGB8 (1), JPEG (2) or PNG (3)", "encoding"
        )

    def _check_size(self, h: int, w: int) -> None:
        """Refuses a frame of h x w that this decoder would not pass to the policy."""
        if (h, w) == (self.height, self.width):
            return
        if not self.resize:
            raise FrameError(
                f"frame is {h}x{w} (height x width) but the policy expects {self.height}x{self.width}; "
                "send frames of that size or start semore-serve with --resize",
                "size",
            )
        if h * w > self.max_pixels:
            raise FrameError(
                f"frame is {h}x{w} = {h * w} pixels, over the limit of {self.max_pixels} pixels "
                "(--max-decode-pixels)",
                "too_large",
            )

    def _decode_raw(self, frame: policy_pb2.Frame, data: bytes) -> np.ndarray:
        h, w = frame.height, frame.width
        if h == 0 or w == 0:
            raise FrameError(f"RAW_RGB8 frame needs height and width, got {h}x{w}")
        expected = h * w * 3
        if len(data) != expected:
            raise FrameError(f"RAW_RGB8 frame of {h}x{w} needs {h}*{w}*3 = {expected} bytes, got {len(data)}")
        self._check_size(h, w)
        return self._policy_sized(Image.fromarray(np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)))

    def _decode_image(self, frame: policy_pb2.Frame, data: bytes, fmt: str) -> np.ndarray:
        h, w, unsupported = _HEADER[fmt](data)
        if (frame.height and frame.height != h) or (frame.width and frame.width != w):
            raise FrameError(f"{fmt} frame header says {frame.height}x{frame.width} but the image is {h}x{w}")
        self._check_size(h, w)
        if unsupported:
            raise FrameError(unsupported, "sample_format")
        if fmt == "PNG":
            _check_png_chunks(data)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
            if image.size != (w, h):  # Pillow must decode the size that was checked, nothing larger
                raise _corrupt(
                    fmt, data, f"its header declares {h}x{w}, Pillow reads {image.height}x{image.width}"
                )
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
        except FrameError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for bad data
            raise _corrupt(fmt, data, str(exc)) from exc
        return self._policy_sized(image)

    def _policy_sized(self, image: Image.Image) -> np.ndarray:
        """The uint8 [H, W, 3] array of an RGB image whose size passed ``_check_size``.

        A frame of another size is resized as the Pillow image it already is: through a numpy array
        first copied it twice, and two workers decoding 4K RGBA PNGs peaked 210 MB over the
        server's RSS (kept 132 MB of it) instead of 131 MB (kept 5).
        """
        if image.size != (self.width, self.height):
            # Bilinear with antialiasing (Pillow's reducing filter), the usual camera-downscale choice.
            image = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
