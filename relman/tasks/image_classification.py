"""Image classification adapter: the model's own image processor, then class logits.

Channel counts are reconciled first (grey digits to an RGB model are repeated, RGB images to a
grey model are averaged) so any image dataset can be scored. `fgsm` gives gradient-sign
adversarial inputs for PyTorch versions (ONNX versions are not differentiable here)."""

from __future__ import annotations

import numpy as np

from relman.data.dataset import Dataset
from relman.errors import EvaluationError
from relman.tasks.base import Batch, Runner


class ImageClassificationRunner(Runner):
    task = "image-classification"

    @property
    def channels(self) -> int:
        return int(self.config.get("num_channels", 3))

    @property
    def image_size(self) -> int:
        size = self.config.get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    def fit_channels(self, images: np.ndarray) -> np.ndarray:
        if images.ndim == 3:
            images = images[..., None]
        have, want = images.shape[-1], self.channels
        if have == want:
            return images
        if have == 1:
            return np.repeat(images, want, axis=-1)
        if want == 1:
            return images.mean(axis=-1, keepdims=True).round().astype(np.uint8)
        raise EvaluationError(f"images have {have} channels but the model expects {want}")

    def encode_images(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = self.fit_channels(np.asarray(images))
        out = self.preprocessor(images=list(images), return_tensors="np", input_data_format="channels_last")
        return {"pixel_values": np.asarray(out["pixel_values"], dtype=np.float32)}

    def encode(self, ds: Dataset, seq_len: int | None = None) -> dict[str, np.ndarray]:
        return self.encode_images(ds.images)

    def synthetic_inputs(self, batch_size: int, seq_len: int | None, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        s = self.image_size
        return self.encode_images(rng.integers(0, 256, size=(batch_size, s, s, self.channels), dtype=np.uint8))

    def fgsm(self, batch: Batch, targets: np.ndarray, epsilon: float) -> Batch:
        """One fast-gradient-sign step of size `epsilon` (in the model's normalised input space)
        that increases the loss of the true class."""
        from relman.tasks.backends import TorchBackend

        if not isinstance(self.backend, TorchBackend):
            raise EvaluationError("FGSM needs a differentiable PyTorch version")
        torch = self.backend.torch
        x = batch.native["pixel_values"].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.backend.forward({"pixel_values": x})
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.as_tensor(targets, device=x.device))
            (grad,) = torch.autograd.grad(loss, x)
        adv = (x + epsilon * grad.sign()).detach()
        host = {"pixel_values": adv.float().cpu().numpy()}
        return Batch(native={"pixel_values": adv}, host=host, size=batch.size, labels=batch.labels)
