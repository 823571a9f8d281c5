"""Quantisers: torch and ONNX Runtime INT8, INT4 weight-only, FP16, and what makes them faithful
(smoothing, per-layer sensitivity, the calibration cache)."""
