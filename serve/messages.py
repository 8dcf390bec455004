"""The PolicyService's answers (GetSpec, Action) and its stack-size check, for serve.core."""

from __future__ import annotations

from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2
from semore_runtime.spec import PolicySpec
from serve.batcher import BatchResult

# The GetSpec fields that repeat PolicySpec fields of the same name (height, frame_stack, ...).
SPEC_FIELDS = sorted(
    {f.name for f in policy_pb2.GetSpecResponse.DESCRIPTOR.fields} & set(PolicySpec.model_fields)
)


def spec_response(
    policy: OnnxPolicy, resize: bool, model_sha256: str, version: str = ""
) -> policy_pb2.GetSpecResponse:
    """What GetSpec answers: the spec as the file carries it, its fields, and which file it is."""
    return policy_pb2.GetSpecResponse(
        spec_json=policy.spec_json,
        resize=resize,
        version=version,
        model_sha256=model_sha256,
        **{name: getattr(policy.spec, name) for name in SPEC_FIELDS},
    )


def action_message(seq: int, result: BatchResult, server_s: float) -> policy_pb2.Action:
    """The Action for one request, with the model call's and the server's time."""
    return policy_pb2.Action(
        seq=seq,
        action=result.action.tolist(),
        inference_us=int(result.inference_s * 1e6),
        server_us=int(server_s * 1e6),
        batch_size=result.batch_size,
    )


def stack_size_error(spec: PolicySpec, frames: int) -> str | None:
    """Why an Act request with ``frames`` frames is refused, or None when it has the spec's K."""
    if frames == spec.frame_stack:
        return None
    return f"Act needs exactly frame_stack={spec.frame_stack} frames (oldest first), got {frames}"
