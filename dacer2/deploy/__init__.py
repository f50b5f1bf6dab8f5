"""Deployment: the Policy API (actor-only loading, acting in env bounds), its inference backends, and the ONNX
export."""
