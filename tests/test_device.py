"""The `device` setting: spelt one way everywhere, resolved once, `auto` picks the CPU here, and seeded
CPU runs repeat exactly. Where torch sees no GPU (this machine, CI) the GPU path is checked by the
device each stage is handed, not by running on one."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fedkr.shared.classifier import ClassifierConfig, TrainConfig, build_classifier, one_hot, train_classifier
from fedkr.shared.config import ConfigError, RunConfig
from fedkr.shared.device import DeviceError, check_device, resolve_device
from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
from helpers import synthetic_images

NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: auto picks it")
def test_auto_picks_the_cpu_where_torch_sees_no_gpu():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert RunConfig(run_id="x").device == "auto"


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:0:1", "mps", "", "cpu "])
def test_misspelt_devices_are_refused_in_one_line(name):
    with pytest.raises(DeviceError, match=r"device must be auto, cpu, cuda or cuda:N"):
        check_device(name)
    with pytest.raises(ConfigError, match=r"^device must be auto, cpu, cuda or cuda:N, got"):
        RunConfig(run_id="x", device=name)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_asked_for_where_there_is_none_is_a_clear_error(name):
    with pytest.raises(DeviceError) as caught:
        resolve_device(name)
    message = str(caught.value)
    assert f"device {name} asked for" in message and "sees no CUDA GPU" in message and "\n" not in message


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
@pytest.mark.parametrize("device, expected", [("gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
                                              ("cuda", "device cuda asked for, but torch")])
def test_cli_device_errors_are_one_line(device, expected):
    result = subprocess.run([sys.executable, "-m", "fedkr", "simulate", "--data", "digits", "--device", device],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_node_config_names_a_site_device_and_refuses_a_bad_one():
    from fedkr.client.node_config import SiteSettings

    node = {"data-path": "/data/site.npz", "site-name": "a"}
    assert SiteSettings.parse({}, node, 1).device == "auto"
    assert SiteSettings.parse({"device": "cpu"}, node, 1).device == "cpu"  # the run's, where the node names none
    assert SiteSettings.parse({"device": "cpu"}, {**node, "device": "cuda:1"}, 1).device == "cuda:1"
    with pytest.raises(ConfigError, match="node config device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        SiteSettings.parse({}, {**node, "device": "gpu"}, 1)


def _trained_classifier(device):  # type: ignore[no-untyped-def]
    images = synthetic_images(96, seed=1)
    labels = np.arange(96) % 3
    model = build_classifier(ClassifierConfig(1, 8, 8, 3, 8), seed=5)
    losses = train_classifier(model, images, one_hot(labels, 3), TrainConfig(epochs=2, min_steps=20, seed=5), device=device)
    return losses, {k: v.clone() for k, v in model.state_dict().items()}


def test_seeded_classifier_training_repeats_exactly_on_the_cpu():
    losses_a, weights_a = _trained_classifier("cpu")
    losses_b, weights_b = _trained_classifier(None)
    losses_c, weights_c = _trained_classifier(torch.device("cpu"))
    assert losses_a == losses_b == losses_c
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]) and torch.equal(weights_a[key], weights_c[key]), key
        assert weights_a[key].device.type == "cpu"


def test_seeded_generator_training_and_sampling_repeat_exactly_on_the_cpu():
    images, labels = synthetic_images(64, seed=2), np.arange(64) % 2
    config = GeneratorConfig(resolution=8, block_channels=(8, 16), train_steps=4, batch_size=16, seed=3)
    drawn = []
    for device in ("cpu", None):
        generator = ClassConditionalDiffusion(config, 2, (8, 8, 1))
        loss = generator.train(images, labels, device=device)
        drawn.append((loss, generator.sample(np.array([0, 1, 1]), seed=9, device=device)))
        assert all(v.device.type == "cpu" for v in generator.ema.values())
    assert drawn[0][0] == drawn[1][0] or (np.isnan(drawn[0][0]) and np.isnan(drawn[1][0]))
    assert np.array_equal(drawn[0][1], drawn[1][1])


@pytest.mark.slow  # a whole run, in process
def test_every_stage_of_a_site_and_the_student_get_the_device(tmp_path, monkeypatch):
    """Each of the site's models (teacher, generator, sampling, the filter's and relabelling's teacher
    passes, the audit's reference models) and the coordinator's student are handed the device set.

    No GPU here: the site is given `cuda:1` as a device object, and each stage records the device it
    was handed, then computes on the CPU.
    """
    import fedkr.client.site as site_module
    import fedkr.server.coordinator as coordinator_module
    from fedkr.client.site import Site
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.inprocess import InProcessLink
    from fedkr.server.coordinator import Coordinator
    from fedkr.shared.generator import ClassConditionalDiffusion
    from helpers import tiny_run_config

    wanted = torch.device("cuda", 1)
    seen: dict[str, set] = {}

    def recording(name, fn):  # type: ignore[no-untyped-def]
        def call(*args, device=None, **kwargs):  # type: ignore[no-untyped-def]
            seen.setdefault(name, set()).add(device)
            return fn(*args, device=None, **kwargs)
        return call

    for name in ("train_classifier", "accuracy", "embed", "embed_and_logits", "predict_proba", "audit_model"):
        monkeypatch.setattr(site_module, name, recording(name, getattr(site_module, name)))
    generator_class = ClassConditionalDiffusion  # the kind the run's sites build (generator-kind diffusion)
    monkeypatch.setattr(generator_class, "train", recording("generator.train", generator_class.train))
    monkeypatch.setattr(generator_class, "sample", recording("generator.sample", generator_class.sample))
    monkeypatch.setattr(coordinator_module, "train_student", recording("student", coordinator_module.train_student))
    monkeypatch.setattr(coordinator_module, "pool_features", recording("pool_features", coordinator_module.pool_features))
    monkeypatch.setattr(coordinator_module, "resolve_device", lambda name: torch.device("cuda", 0))

    sites = [Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, 2, "iid", 0, 0.2)), tmp_path / f"site-{i}",
                  device=wanted) for i in range(2)]
    config = tiny_run_config(tmp_path, run_id="device", rounds=1, generator_steps=2, teacher_epochs=1, student_epochs=1,
                             samples_per_class=3, ipc=2, audit_max_auc=1.0, audit_max_tpr=1.0, audit_max_distance_auc=1.0)
    Coordinator(config, None).run(InProcessLink(sites))
    site_stages = ("train_classifier", "accuracy", "generator.train", "generator.sample", "embed", "embed_and_logits",
                   "predict_proba", "audit_model")
    assert {name: seen.get(name) for name in site_stages} == {name: {wanted} for name in site_stages}
    assert seen["student"] == seen["pool_features"] == {torch.device("cuda", 0)}
