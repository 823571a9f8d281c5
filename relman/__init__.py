"""relman: a desktop release manager for machine-learning models.

The package root stays import-light on purpose: the GUI and the CLI import it at start-up,
so nothing here may pull in torch, transformers, onnxruntime or Qt.
"""

__version__ = "0.1.0"
