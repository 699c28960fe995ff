from dataclasses import replace

import numpy as np
import pytest
import torch

from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig, effective_resolution


def test_effective_resolution():
    assert effective_resolution(16, 28, 28, 3) == 16
    assert effective_resolution(16, 8, 8, 3) == 8
    assert effective_resolution(16, 10, 10, 3) == 8  # divisible by the UNet's downsampling
    assert effective_resolution(32, 28, 28, 3) == 28


def test_train_sample_save_load(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10)
    gen = ClassConditionalDiffusion(GeneratorConfig(train_steps=20, batch_size=16, block_channels=(16, 32), sample_steps=5), 4, (12, 12, 3))
    before = {k: v.clone() for k, v in gen.unet.state_dict().items()}
    loss = gen.train(images, labels)
    assert np.isfinite(loss)
    assert any((before[k] != v).any() for k, v in gen.unet.state_dict().items()), "weights moved"
    a = gen.sample(np.array([0, 1, 2, 3]), seed=1)
    assert a.shape == (4, 12, 12, 3) and a.dtype == np.uint8
    assert (a == gen.sample(np.array([0, 1, 2, 3]), seed=1)).all(), "same seed, same images"
    assert (a != gen.sample(np.array([0, 1, 2, 3]), seed=2)).any(), "new seed, fresh images"
    guided = gen.sample(np.array([0, 1]), seed=1, guidance_scale=3.0)
    assert guided.shape == (2, 12, 12, 3)
    gen.save(tmp_path / "g")
    loaded = ClassConditionalDiffusion.load(tmp_path / "g")
    assert (loaded.sample(np.array([1, 2]), seed=5) == gen.sample(np.array([1, 2]), seed=5)).all()
    assert loaded.summary()["generator_steps"] == 20

    # stochastic DDIM: fresh noise at every step, drawn from the same seeded generator
    stochastic = gen.sample(np.array([0, 1, 2, 3]), seed=1, eta=1.0)
    assert (stochastic != a).any(), "eta > 0 adds noise along the way"
    assert (stochastic == gen.sample(np.array([0, 1, 2, 3]), seed=1, eta=1.0)).all(), "and repeats with the seed"
    with pytest.raises(ValueError, match="eta"):
        gen.sample(np.array([0]), seed=1, eta=1.5)
    # at 5 DDIM steps on the capped cosine schedule, diffusers' eta-1 step alone takes the root of -1 ulp (NaN)
    assert gen.config.sample_steps == 5 and gen.sample(np.arange(4).repeat(8), seed=1, eta=1.0).shape[0] == 32
    assert "sample_eta" not in gen.config.to_dict(), "plans that do not use it read as before"
    eta_config = GeneratorConfig.from_dict({**gen.config.to_dict(), "sample_eta": 0.5})
    assert eta_config.sample_eta == 0.5 and GeneratorConfig.from_dict(eta_config.to_dict()) == eta_config


@pytest.mark.parametrize("setting", [{"noise_multiplicity": 0}, {"noise_multiplicity": 2.0}, {"noise_multiplicity": True},
                                     {"sample_eta": -0.1}, {"sample_eta": 1.5}, {"sample_eta": float("nan")},
                                     {"sample_eta": "1"}, {"classifier_guidance": -0.5},
                                     {"classifier_guidance": float("inf")}, {"classifier_guidance": True},
                                     {"classifier_guidance": 1.0, "kind": "dp-merf"}])
def test_settings_out_of_range_are_refused_when_the_config_is_made(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        GeneratorConfig(**setting)
    with pytest.raises(ValueError, match=next(iter(setting))):
        GeneratorConfig.from_dict({**GeneratorConfig().to_dict(), **setting})


class _Brightness(torch.nn.Module):
    """Two classes told apart by mean brightness: class 1 is bright, class 0 dark (logits ±10 x the mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([-10 * mean, 10 * mean], dim=1)


def test_classifier_guidance_moves_samples_towards_the_classifier_class():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 12, 12, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(2), 16)
    gen = ClassConditionalDiffusion(GeneratorConfig(train_steps=10, batch_size=16, block_channels=(16, 32), sample_steps=5), 2, (12, 12, 1))
    gen.train(images, labels)
    asked = np.repeat(np.arange(2), 8)
    plain = gen.sample(asked, seed=3)
    assert (gen.sample(asked, seed=3, classifier=_Brightness(), classifier_scale=0.0) == plain).all(), "scale 0: off"
    guided = gen.sample(asked, seed=3, classifier=_Brightness(), classifier_scale=5.0)
    brightness = guided.reshape(len(asked), -1).mean(1).astype(float) - plain.reshape(len(asked), -1).mean(1)
    assert (brightness[asked == 1] > 5).all() and (brightness[asked == 0] < -5).all(), brightness
    with pytest.raises(ValueError, match="classifier_scale"):
        gen.sample(asked, seed=3, classifier=_Brightness(), classifier_scale=-1.0)
    # the config's classifier_guidance is the scale a caller that names none samples at (a site's setting)
    gen.config = replace(gen.config, classifier_guidance=5.0)
    assert (gen.sample(asked, seed=3, classifier=_Brightness()) == guided).all()
    assert gen.summary()["classifier_guidance"] == 5.0
    with pytest.raises(ValueError, match="needs a classifier"):  # a guided config never samples unguided unawares
        gen.sample(asked, seed=3)
    assert (gen.sample(asked, seed=3, classifier_scale=0.0) == plain).all()
    assert "classifier_guidance" not in GeneratorConfig().to_dict(), "plans that do not guide read as before"
    assert GeneratorConfig.from_dict(gen.config.to_dict()) == gen.config
