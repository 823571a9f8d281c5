"""Seeded input perturbations for the robustness suite. Pure numpy/str functions, so the same
seed gives the same perturbed data for every version being compared."""

from __future__ import annotations

import random
import string

import numpy as np

TEXT_KINDS = ("typo", "swap", "case", "whitespace", "punctuation")
IMAGE_KINDS = ("noise", "brightness", "shift")
_KEYBOARD = {c: n for c, n in zip("qwertyuiopasdfghjklzxcvbnm", "wqeryuiopoasdfghjklkzxcvbnb")}


def perturb_text(text: str, kind: str, rate: float, rng: random.Random) -> str:
    """One perturbed copy of `text`; about `rate` of its characters are touched (at least one
    when the text has any letter)."""
    chars = list(text)
    letters = [i for i, c in enumerate(chars) if c.isalpha()]
    n = max(1, round(rate * len(chars))) if chars else 0
    if kind == "typo":
        for i in rng.sample(letters, min(n, len(letters))):
            c = chars[i].lower()
            repl = _KEYBOARD.get(c) or rng.choice(string.ascii_lowercase)
            chars[i] = repl.upper() if chars[i].isupper() else repl
    elif kind == "swap":
        pairs = [i for i in range(len(chars) - 1) if chars[i].isalpha() and chars[i + 1].isalpha()]
        for i in rng.sample(pairs, min(n, len(pairs))):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    elif kind == "case":
        for i in rng.sample(letters, min(n, len(letters))):
            chars[i] = chars[i].swapcase()
    elif kind == "whitespace":
        for _ in range(n):
            pos = rng.randrange(len(chars) + 1)
            chars.insert(pos, rng.choice([" ", "  ", "\t"]))
    elif kind == "punctuation":
        for _ in range(n):
            existing = [i for i, c in enumerate(chars) if c in string.punctuation]
            if existing and rng.random() < 0.5:
                del chars[rng.choice(existing)]
            else:
                chars.insert(rng.randrange(len(chars) + 1), rng.choice(",.!?;:-'"))
    else:
        raise ValueError(f"unknown text perturbation '{kind}'")
    return "".join(chars)


def perturb_texts(texts: list[str], kind: str, rate: float, seed: int) -> list[str]:
    rng = random.Random(f"{seed}:{kind}")
    return [perturb_text(t, kind, rate, rng) for t in texts]


def perturb_images(images: np.ndarray, kind: str, seed: int, *, noise_std: float = 0.1, brightness: float = 0.3,
                   shift_px: int = 1) -> np.ndarray:
    """A perturbed copy of uint8 images (N x H x W x C)."""
    rng = np.random.default_rng([seed, IMAGE_KINDS.index(kind)])
    x = images.astype(np.float32)
    if kind == "noise":
        x = x + rng.normal(0.0, noise_std * 255.0, size=x.shape)
    elif kind == "brightness":
        factors = 1.0 + rng.uniform(-brightness, brightness, size=(x.shape[0],) + (1,) * (x.ndim - 1))
        x = x * factors
    elif kind == "shift":
        out = np.zeros_like(x)
        for i in range(x.shape[0]):
            dy, dx = (int(v) for v in rng.integers(-shift_px, shift_px + 1, size=2))
            out[i] = _shift(x[i], dy, dx)
        x = out
    else:
        raise ValueError(f"unknown image perturbation '{kind}'")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift by (dy, dx) pixels, filling the uncovered border with zeros (no wrap-around)."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = img[ys, xs]
    return out
