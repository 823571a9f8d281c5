"""Draw relman's application icon: SVG, PNG sizes, Windows .ico and macOS .icns.

Why a script: the installers need the icon in several formats and sizes (a .desktop entry wants
hicolor PNGs, Inno Setup a .ico, the .app bundle a .icns); drawing it from one description keeps
them identical and lets anyone change the design in one place. Pillow only, no network.

    .venv/bin/python packaging/make_icon.py        # writes resources/icons/
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "resources" / "icons"

# The design on a 64x64 canvas: a rounded blue tile, three release nodes joined by a path
# (draft -> staging -> production), the last one green.
BLUE, WHITE, GREEN = "#3b6fd8", "#ffffff", "#7ee2a0"
NODES = ((18, 44, WHITE), (32, 22, WHITE), (46, 44, GREEN))
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

SVG = f"""<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">
  <rect x="2" y="2" width="60" height="60" rx="12" fill="{BLUE}"/>
  <circle cx="18" cy="44" r="6" fill="{WHITE}"/>
  <circle cx="32" cy="22" r="6" fill="{WHITE}"/>
  <circle cx="46" cy="44" r="6" fill="{GREEN}"/>
  <path d="M18 44 L32 22 L46 44" stroke="{WHITE}" stroke-width="3" fill="none"/>
</svg>
"""


def draw(size: int) -> Image.Image:
    """The icon at `size` pixels, drawn 4x larger and downsampled for smooth edges."""
    ss = 4
    s = size * ss / 64.0
    img = Image.new("RGBA", (size * ss, size * ss), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([2 * s, 2 * s, 62 * s, 62 * s], radius=12 * s, fill=BLUE)
    d.line([(18 * s, 44 * s), (32 * s, 22 * s), (46 * s, 44 * s)], fill=WHITE, width=max(1, round(3 * s)),
           joint="curve")
    for cx, cy, colour in NODES:
        d.ellipse([(cx - 6) * s, (cy - 6) * s, (cx + 6) * s, (cy + 6) * s], fill=colour)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    svg = out / "relman.svg"
    if not svg.exists() or svg.read_text(encoding="utf-8") != SVG:
        svg.write_text(SVG, encoding="utf-8")
    written.append(svg)
    for size in PNG_SIZES:
        path = out / f"relman-{size}.png"
        draw(size).save(path, optimize=True)
        written.append(path)
    big = draw(512)
    big.save(out / "relman.ico", sizes=[(n, n) for n in (16, 24, 32, 48, 64, 128, 256)])
    big.save(out / "relman.icns")
    written += [out / "relman.ico", out / "relman.icns"]
    return written


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
