"""Which generator a site trains and loads: one place that maps `GeneratorConfig.kind` to its class.

"diffusion" is `ClassConditionalDiffusion` (DP-SGD on a diffusers UNet); "dp-merf" is
`MeanEmbeddingGenerator` (one Gaussian release of class mean embeddings). Both answer `train`,
`sample`, `summary`, `save` and `load`; the audit's white-box attack scores each with its own
training loss (`client/auditor.py`).
"""

from __future__ import annotations

from pathlib import Path

from .generator import ClassConditionalDiffusion, GeneratorConfig, effective_resolution
from .json_input import read_json_file
from .mean_embedding import KIND as MERF_KIND, MeanEmbeddingGenerator, working_resolution

#: Any generator a site may hold.
SiteGenerator = ClassConditionalDiffusion | MeanEmbeddingGenerator


def build_generator(config: GeneratorConfig, num_classes: int, image_shape: tuple[int, int, int]) -> SiteGenerator:
    """A fresh, untrained generator of `config.kind` for `num_classes` classes of uint8 (H, W, C) images."""
    if config.kind == MERF_KIND:
        return MeanEmbeddingGenerator(config, num_classes, image_shape)
    return ClassConditionalDiffusion(config, num_classes, image_shape)


def generator_resolution(config: GeneratorConfig, image_shape: tuple[int, int, int]) -> int:
    """The resolution (px) a generator of `config.kind` draws at for uint8 (H, W, C) images, before it scales
    its samples up to H x W: what `build_generator(config, ..., image_shape).size` will be, without building it."""
    height, width = image_shape[:2]
    if config.kind == MERF_KIND:
        return working_resolution(config.resolution, height, width)
    return effective_resolution(config.resolution, height, width, len(config.block_channels))


def load_generator(directory: Path) -> SiteGenerator:
    """The generator saved in `directory`, of the kind its generator.json names (none: diffusion, as before kinds).

    Raises:
        JSONInputError: generator.json missing fields or malformed; OSError: files missing.
    """
    meta = read_json_file(Path(directory) / "generator.json", schema={"type": "object"})
    if meta.get("kind") == MERF_KIND:
        return MeanEmbeddingGenerator.load(directory)
    return ClassConditionalDiffusion.load(directory)
