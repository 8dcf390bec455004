from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("data", "height", "width", "encoding")
    class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ENCODING_UNSPECIFIED: _ClassVar[Frame.Encoding]
        RAW_RGB8: _ClassVar[Frame.Encoding]
        JPEG: _ClassVar[Frame.Encoding]
        PNG: _ClassVar[Frame.Encoding]
    ENCODING_UNSPECIFIED: Frame.Encoding
    RAW_RGB8: Frame.Encoding
    JPEG: Frame.Encoding
    PNG: Frame.Encoding
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    encoding: Frame.Encoding
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., encoding: _Optional[_Union[Frame.Encoding, str]] = ...) -> None: ...

class GetSpecRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSpecResponse(_message.Message):
    __slots__ = ("spec_json", "height", "width", "channels", "frame_stack", "action_dim", "action_low", "action_high", "env_id", "resize", "version", "model_sha256")
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FRAME_STACK_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTION_LOW_FIELD_NUMBER: _ClassVar[int]
    ACTION_HIGH_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    height: int
    width: int
    channels: int
    frame_stack: int
    action_dim: int
    action_low: _containers.RepeatedScalarFieldContainer[float]
    action_high: _containers.RepeatedScalarFieldContainer[float]
    env_id: str
    resize: bool
    version: str
    model_sha256: str
    def __init__(self, spec_json: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., frame_stack: _Optional[int] = ..., action_dim: _Optional[int] = ..., action_low: _Optional[_Iterable[float]] = ..., action_high: _Optional[_Iterable[float]] = ..., env_id: _Optional[str] = ..., resize: _Optional[bool] = ..., version: _Optional[str] = ..., model_sha256: _Optional[str] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("seq", "frame", "reset")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    seq: int
    frame: Frame
    reset: bool
    def __init__(self, seq: _Optional[int] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., reset: _Optional[bool] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("seq", "action", "inference_us", "server_us", "batch_size")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    SERVER_US_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    action: _containers.RepeatedScalarFieldContainer[float]
    inference_us: int
    server_us: int
    batch_size: int
    def __init__(self, seq: _Optional[int] = ..., action: _Optional[_Iterable[float]] = ..., inference_us: _Optional[int] = ..., server_us: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ActRequest(_message.Message):
    __slots__ = ("seq", "frames")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, seq: _Optional[int] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...
