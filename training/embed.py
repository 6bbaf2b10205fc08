"""Image and class-text embeddings of a loaded model, shared by `tol eval` and `tol predict`.

Class texts become a zero-shot classifier as open_clip builds one (`open_clip.build_zero_shot_classifier`: every
template filled with the class text, embedded, normalised, averaged, normalised again). Images are read with PIL,
passed through the model's eval transform and embedded in batches; unreadable files are reported by path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from training.model import LoadedModel

# Template sets by name: OpenAI's 80 ImageNet templates (BioCLIP's evaluation uses them), or the class text alone.
TEMPLATES: dict[str, tuple[Callable[[str], str], ...]] = {
    "openai": tuple(open_clip.OPENAI_IMAGENET_TEMPLATES),
    "simple": tuple(open_clip.SIMPLE_IMAGENET_TEMPLATES),
    "none": (lambda text: text,),
}


class UnreadableImage(ValueError):
    """An image file that PIL cannot open or decode; the message names the path."""


@torch.no_grad()
def text_classifier(loaded: LoadedModel, class_texts: Sequence[str], templates: str = "openai",
                    device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
    """A [embed_dim, classes] zero-shot classifier: template-averaged, L2-normalised class-text embeddings."""
    if templates not in TEMPLATES:
        raise ValueError(f"templates {templates!r}: expected one of {', '.join(TEMPLATES)}")
    if not class_texts:
        raise ValueError("no class texts to embed")
    return open_clip.build_zero_shot_classifier(loaded.model, loaded.tokenizer, list(class_texts),
                                                TEMPLATES[templates], num_classes_per_batch=16, device=device,
                                                use_tqdm=progress)


def open_rgb(path: Path) -> Image.Image:
    """The image at `path` as RGB, or UnreadableImage naming the path and why."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"{path}: not a readable image ({error})") from error


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def image_features(loaded: LoadedModel, images: Sequence[Image.Image | Path], device: str | torch.device = "cpu",
                   batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """L2-normalised [len(images), embed_dim] features; paths are opened with `open_rgb`."""
    chunks = []
    for batch in tqdm(list(_batches(images, batch_size)), desc="embedding images", unit="batch",
                      disable=not progress):
        pixels = torch.stack([loaded.eval_transform(open_rgb(item) if isinstance(item, Path) else item)
                              for item in batch]).to(device)
        chunks.append(F.normalize(loaded.model.encode_image(pixels).float(), dim=-1))
    if not chunks:
        return torch.empty(0, loaded.config["model_cfg"]["embed_dim"])
    return torch.cat(chunks).cpu()
