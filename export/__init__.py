"""Export: a training checkpoint to one self-describing ONNX policy file (encoder + actor + preprocessing)."""
