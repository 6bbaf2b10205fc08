"""Procedural specimen pictures whose look follows the taxonomy, so a small model can learn from them.

Every rank contributes its own visual trait, derived from a stable hash of the rank's name:

    kingdom + phylum -> background palette      class -> body shape       order -> body proportions
    family -> body pattern                      genus -> pattern colour and scale
    species -> accent marks (count, colour, position)

Two species of one genus therefore share body, pattern and palette and differ in the accents, and a species
never seen in training still looks like its relatives. Pose, scale, lighting and noise vary per image, drawn
from the caller's random generator, so the same seed always gives the same pixels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("ellipse", "triangle", "diamond", "pentagon", "hexagon", "star", "crescent", "capsule")
PATTERNS = ("stripes", "spots", "rings", "checks", "bands", "plain")
# Largest side we draw at; bigger outputs are upscaled (drawing and noise at full size would dominate kit time).
DRAW_LIMIT = 640


def trait(name: str, salt: str) -> float:
    """A stable number in [0, 1) for a rank name: the same name gives the same trait in every kit."""
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    rgb = Image.new("HSV", (1, 1), (int(h * 255) % 256, int(s * 255), int(v * 255))).convert("RGB")
    return rgb.getpixel((0, 0))


def shape_points(kind: str, w: float, h: float) -> list[tuple[float, float]]:
    """Outline of a body shape centred on the origin, w wide and h tall."""
    if kind == "ellipse":
        angles = [2 * math.pi * i / 48 for i in range(48)]
        return [(w / 2 * math.cos(a), h / 2 * math.sin(a)) for a in angles]
    if kind == "star":
        return [((w if i % 2 == 0 else w * 0.45) / 2 * math.cos(math.pi * i / 5 - math.pi / 2),
                 (h if i % 2 == 0 else h * 0.45) / 2 * math.sin(math.pi * i / 5 - math.pi / 2)) for i in range(10)]
    if kind == "crescent":
        outer = [(w / 2 * math.cos(a), h / 2 * math.sin(a)) for a in np.linspace(-math.pi / 2, math.pi / 2, 24)]
        inner = [(w / 5 * math.cos(a), h / 2 * math.sin(a)) for a in np.linspace(math.pi / 2, -math.pi / 2, 24)]
        return outer + inner
    if kind == "capsule":
        r = h / 2
        right = [(w / 2 - r + r * math.cos(a), r * math.sin(a)) for a in np.linspace(-math.pi / 2, math.pi / 2, 16)]
        left = [(-w / 2 + r + r * math.cos(a), r * math.sin(a)) for a in np.linspace(math.pi / 2, 3 * math.pi / 2, 16)]
        return right + left
    sides = {"triangle": 3, "diamond": 4, "pentagon": 5, "hexagon": 6}[kind]
    return [(w / 2 * math.cos(2 * math.pi * i / sides - math.pi / 2),
             h / 2 * math.sin(2 * math.pi * i / sides - math.pi / 2)) for i in range(sides)]


def pattern_layer(family: str, genus: str, side: int, rng: np.random.Generator) -> Image.Image:
    """The body's surface: a pattern chosen by the family, coloured and scaled by the genus."""
    pattern = PATTERNS[int(trait(family, "pattern") * len(PATTERNS))]
    base = hsv(trait(family, "body-hue"), 0.55 + 0.4 * trait(family, "body-sat"), 0.55 + 0.4 * trait(family, "body-val"))
    ink = hsv(trait(genus, "ink-hue"), 0.7, 0.25 + 0.6 * trait(genus, "ink-val"))
    period = max(4, int(side * (0.06 + 0.12 * trait(genus, "period"))))
    layer = Image.new("RGB", (side, side), base)
    draw = ImageDraw.Draw(layer)
    phase = int(rng.integers(0, period))
    if pattern == "stripes":
        for x in range(-side + phase, 2 * side, period):
            draw.line([(x, 0), (x + side // 2, side)], fill=ink, width=max(2, period // 3))
    elif pattern == "bands":
        for y in range(phase, side, period):
            draw.rectangle([0, y, side, y + period // 3], fill=ink)
    elif pattern == "spots":
        for y in range(phase, side, period):
            for x in range((y // period % 2) * period // 2, side, period):
                r = period // 4
                draw.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    elif pattern == "rings":
        for r in range(period // 2 + phase, side, period):
            draw.ellipse([side / 2 - r, side / 2 - r, side / 2 + r, side / 2 + r], outline=ink, width=max(2, period // 4))
    elif pattern == "checks":
        for y in range(0, side, period):
            for x in range((y // period % 2) * period, side, 2 * period):
                draw.rectangle([x, y, x + period - 1, y + period - 1], fill=ink)
    return layer


def accents(draw: ImageDraw.ImageDraw, species: str, outline: list[tuple[float, float]], rng: np.random.Generator) -> None:
    """Species marks: a number of eye-spots along the outline, in the species' colour."""
    if not species:
        return
    count = 1 + int(trait(species, "accent-count") * 5)
    colour = hsv(trait(species, "accent-hue"), 0.9, 0.95)
    start = trait(species, "accent-start")
    xs = [x for x, _ in outline]
    radius = max(4, int((max(xs) - min(xs)) * 0.08))
    for i in range(count):
        px, py = outline[int((start + i / (count + 1) * 0.8) * len(outline)) % len(outline)]
        px, py = px * 0.7, py * 0.7
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour, outline=(0, 0, 0))
    jitter = float(rng.uniform(-0.2, 0.2))
    tail = int(8 + 30 * trait(species, "tail"))
    draw.line([outline[0], (outline[0][0] * 1.1 + jitter * tail, outline[0][1] * 1.1 - tail)], fill=colour, width=3)


def background(ranks: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A lit, cluttered, noisy backdrop whose palette belongs to the kingdom and phylum.

    The light comes from a random direction and random blobs (stones, leaves) sit behind the specimen, so two
    pictures of one species differ as two photographs do, not only in pose: their perceptual hashes stay apart.
    """
    kingdom, phylum = ranks[0] or "?", ranks[1] or "?"
    near = np.array(hsv(trait(kingdom, "bg-hue"), 0.35, 0.9), dtype=np.float32)
    far = np.array(hsv(trait(phylum, "bg-hue"), 0.5, 0.45), dtype=np.float32)
    w, h = size
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xs / w - 0.5) * math.cos(angle) + (ys / h - 0.5) * math.sin(angle) + 0.5
    t = np.clip(t, 0.0, 1.0)[:, :, None]
    pixels = (near * (1 - t) + far * t) * float(rng.uniform(0.8, 1.15))
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    clutter = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        tone = tuple(int(c) for c in np.clip(far * rng.uniform(0.5, 1.6), 0, 255))
        clutter.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r * rng.uniform(0.4, 1.0)], fill=tone)
    pixels = np.asarray(canvas.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)
    pixels += rng.normal(0, 10, (h, w, 3)).astype(np.float32)  # sensor noise, after the soft focus
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def draw_specimen(ranks: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A picture of a specimen of the taxon `ranks` (kingdom .. specific epithet, "" when missing)."""
    width, height = size
    scale = min(1.0, DRAW_LIMIT / max(width, height))
    canvas_size = (max(16, round(width * scale)), max(16, round(height * scale)))
    canvas = background(ranks, canvas_size, rng)
    cls, order, family, genus, species = (name or "?" for name in ranks[2:7])
    kind = SHAPES[int(trait(cls, "shape") * len(SHAPES))]
    aspect = 0.45 + 0.5 * trait(order, "aspect")
    side = int(min(canvas_size) * rng.uniform(0.45, 0.8))
    body_w, body_h = side * 0.95, side * 0.95 * aspect
    outline = shape_points(kind, body_w, body_h)
    layer_side = int(side * 1.3)
    centred = [(x + layer_side / 2, y + layer_side / 2) for x, y in outline]
    mask = Image.new("L", (layer_side, layer_side), 0)
    ImageDraw.Draw(mask).polygon(centred, fill=255)
    body = pattern_layer(family, genus, layer_side, rng)
    marks = ImageDraw.Draw(body)
    marks.line(centred + centred[:1], fill=(20, 20, 20), width=max(2, side // 60))
    accents(ImageDraw.Draw(body), ranks[6] and species, centred, rng)
    angle = float(rng.uniform(0, 360))
    body, mask = body.rotate(angle, resample=Image.BICUBIC, expand=True), mask.rotate(angle, expand=True)
    x = int(rng.uniform(0, max(1, canvas_size[0] - body.width)))
    y = int(rng.uniform(0, max(1, canvas_size[1] - body.height)))
    canvas.paste(body, (x, y), mask.filter(ImageFilter.GaussianBlur(1)))
    if canvas_size != (width, height):
        canvas = canvas.resize((width, height), Image.BICUBIC)
    return canvas
