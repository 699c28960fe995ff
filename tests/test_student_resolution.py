"""The student's input resolution: a network that resamples every input to the resolution its training
images carry (`ClassifierConfig.input_resolution`, `RunConfig.student_resample`)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedkr.server.student import student_input_resolution
from fedkr.shared.classifier import (CONFIG_SCHEMA, ClassifierConfig, build_classifier, predict_logits, resample_input,
                                     to_tensor, to_uint8)
from fedkr.shared.json_input import JSONInputError, read_json_file
from fedkr.shared.reports import FitReport


def _report(site: str, resolution: int | None) -> FitReport:
    summary = {} if resolution is None else {"generator_resolution": resolution}
    return FitReport(site, 40, 10, ("a", "b"), (28, 28, 1), (20, 20), 0.9, 0.1, 1.0, 1.0, generator_summary=summary)


def _sharp_images(n: int = 6, side: int = 28) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, side, side, 1), dtype=np.uint8)


def test_resampling_blurs_sharp_images_and_leaves_others_alone():
    x = to_tensor(_sharp_images())
    assert resample_input(x, 0) is x and resample_input(x, 28) is x and resample_input(x, 40) is x
    blurred = resample_input(x, 16)
    assert blurred.shape == x.shape
    # pixel noise loses most of its pixel-to-pixel variation at 16 px; an image already drawn that way barely changes
    variation = lambda t: float(t.diff(dim=-1).abs().mean())  # noqa: E731
    assert variation(blurred) < 0.6 * variation(x)
    again = resample_input(blurred, 16)
    assert float((again - blurred).abs().mean()) < 0.5 * float((blurred - x).abs().mean())


def test_a_network_with_an_input_resolution_sees_its_inputs_resampled():
    plain = build_classifier(ClassifierConfig(1, 28, 28, 3), seed=0)
    resampling = build_classifier(ClassifierConfig(1, 28, 28, 3, input_resolution=16), seed=0)
    assert sum(p.numel() for p in resampling.parameters()) == sum(p.numel() for p in plain.parameters())
    resampling.load_state_dict(plain.state_dict())  # no weights of its own: the same state dict loads
    images = _sharp_images()
    blurred = to_uint8(resample_input(to_tensor(images), 16))
    np.testing.assert_allclose(predict_logits(resampling, images), predict_logits(plain, blurred), atol=0.02)
    assert not np.allclose(predict_logits(resampling, images), predict_logits(plain, images), atol=0.02)


def test_the_input_resolution_is_saved_only_where_it_is_on_and_is_bounded(tmp_path):
    plain, resampling = ClassifierConfig(1, 28, 28, 3), ClassifierConfig(1, 28, 28, 3, input_resolution=16)
    assert "input_resolution" not in plain.to_dict()  # a network without it saves as before
    for config in (plain, resampling):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config.to_dict()))
        assert ClassifierConfig.from_dict(read_json_file(path, schema=CONFIG_SCHEMA)) == config
    path.write_text(json.dumps({**plain.to_dict(), "input_resolution": -1}))
    with pytest.raises(JSONInputError):
        read_json_file(path, schema=CONFIG_SCHEMA)
    assert "input_resolution" in replace(resampling, input_resolution=-1).out_of_bounds()
    assert resampling.out_of_bounds() is None


def test_the_student_resamples_to_the_smallest_generator_resolution_below_the_images_side():
    assert student_input_resolution([_report("site-0", 16), _report("site-1", 12)], (28, 28, 1)) == 12
    assert student_input_resolution([_report("site-0", 16)], (16, 16, 3)) == 0  # generators at the images' own size
    assert student_input_resolution([_report("site-0", None)], (28, 28, 1)) == 0  # no site says
    assert student_input_resolution([], (28, 28, 1)) == 0


def test_an_audit_candidate_carries_the_students_input_resolution():
    from fedkr.shared import codec
    from fedkr.shared.reports import AuditCandidate

    config = ClassifierConfig(1, 28, 28, 3, input_resolution=16)
    student = build_classifier(config, seed=0)
    candidate = AuditCandidate(run_id="run-1", student_config=config,
                               student_weights={k: v.numpy().copy() for k, v in student.state_dict().items()},
                               released_images=_sharp_images(4))
    decoded = codec.decode_candidate(codec.encode_candidate(candidate, site_id="site-0"), site_id="site-0")
    assert decoded.student_config == config
    torch.testing.assert_close(torch.as_tensor(decoded.student_weights["head.weight"]), student.state_dict()["head.weight"])
