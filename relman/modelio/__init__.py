"""Read, write and inspect model formats (HF folder, safetensors, ONNX, torch weights).

`inspect` is light (torch only for pickle files); `loading` imports torch/transformers and is
meant for worker processes.
"""
