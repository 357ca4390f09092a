"""Seal images: checking an uploaded one, and drawing a standard round red seal (Pillow).

A Chinese company seal (公章) is a red circle with the company's name along the upper arc, a
five-pointed star in the middle and the seal's kind (合同专用章, …) underneath. Organisations
that uploaded their own seal image get that image; the others get this drawing, so a built-in
signature always shows a seal.

An upload is untrusted: it must decode as a PNG or JPEG, stay under a byte limit and a pixel
limit (a small file can declare a huge image: a decompression bomb), and is re-encoded as PNG,
so what is stored and embedded is pixels we produced, not the uploader's bytes.
"""

from __future__ import annotations

import math
import warnings
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

SEAL_RED = (230, 0, 18, 255)
SEAL_PIXELS = 480  # the drawn seal's side, in pixels
MAX_SEAL_SIDE = 4000  # an uploaded seal wider or higher than this is refused
ACCEPTED_FORMATS = ("PNG", "JPEG")


class SealImageProblem(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def checked_seal_image(data: bytes, max_bytes: int) -> bytes:
    """`data` decoded, checked and re-encoded as an RGBA PNG; SealImageProblem says what is wrong.
    White (near-white) background becomes transparent, so the seal does not hide the text under it."""
    if len(data) > max_bytes:
        raise SealImageProblem(f"印章图片超过 {max_bytes} 字节（The seal image is larger than {max_bytes} bytes）")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as probe:
                kind = probe.format
                width, height = probe.size
                if kind not in ACCEPTED_FORMATS:
                    raise SealImageProblem(f"印章图片须为 PNG 或 JPEG，收到 {kind}（The seal image must be a PNG or "
                                           f"JPEG, got {kind}）")
                if max(width, height) > MAX_SEAL_SIDE:
                    raise SealImageProblem(f"印章图片尺寸过大：{width}×{height}（The seal image is {width}×{height} "
                                           f"pixels; at most {MAX_SEAL_SIDE} on each side）")
                probe.load()
                image = probe.convert("RGBA")
    except SealImageProblem:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SealImageProblem(f"印章文件不是有效的图片（The seal file is not a readable image: "
                               f"{type(e).__name__}）") from e
    r, g, b, a = image.split()
    white = ImageChops.darker(ImageChops.darker(r, g), b).point(lambda v: 255 if v > 235 else 0)
    image.putalpha(ImageChops.subtract(a, white))
    out = BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, radius: float) -> None:
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.382
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    draw.polygon(points, fill=SEAL_RED)


def round_seal(name: str, kind: str, font_path: Path) -> bytes:
    """A standard round red seal as an RGBA PNG: `name` along the upper arc (each character upright
    to the circle's centre), a star in the middle, `kind` (e.g. 合同专用章) below it."""
    size = SEAL_PIXELS
    image = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    c = size / 2
    ring = size * 0.035
    draw.ellipse((ring / 2, ring / 2, size - ring / 2, size - ring / 2), outline=SEAL_RED, width=round(ring))
    _star(draw, c, c, size * 0.15)
    chars = list(name.strip()) or ["?"]
    # Characters spread over an arc of up to 240°, centred on the top; a longer name gets smaller.
    span = math.radians(min(240.0, 20.0 * len(chars) + 60))
    step = span / max(len(chars) - 1, 1)
    glyph = max(14, min(int(size * 0.12), int((size * 0.36) * step)))
    font = ImageFont.truetype(str(font_path), glyph)
    text_radius = c - ring - glyph * 0.75
    for i, ch in enumerate(chars):
        angle = -span / 2 + i * step if len(chars) > 1 else 0.0  # 0 = straight up
        tile = Image.new("RGBA", (glyph * 2, glyph * 2), (255, 255, 255, 0))
        ImageDraw.Draw(tile).text((glyph, glyph), ch, font=font, fill=SEAL_RED, anchor="mm")
        tile = tile.rotate(-math.degrees(angle), resample=Image.Resampling.BICUBIC)
        x = c + text_radius * math.sin(angle)
        y = c - text_radius * math.cos(angle)
        image.alpha_composite(tile, (round(x - glyph), round(y - glyph)))
    if kind:
        small = ImageFont.truetype(str(font_path), int(size * 0.075))
        draw.text((c, c + size * 0.27), kind, font=small, fill=SEAL_RED, anchor="mm")
    out = BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
