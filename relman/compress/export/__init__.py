"""Exporters: relman's own ONNX exporter, its streaming tensor reader/writer, and ONNX Runtime
GenAI's model builder for the LLM families it knows."""
