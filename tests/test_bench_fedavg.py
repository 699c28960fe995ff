"""The Flower FedAvg baseline: it learns, it averages, and it counts exactly what the sites uploaded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fedkr.bench_fedavg import FedAvgSettings, local_seed, run_fedavg
from fedkr.shared.classifier import ClassifierConfig, TrainConfig, build_classifier, one_hot, train_classifier
from fedkr.shared.data import ImageSet, load_dataset
from fedkr.shared.partition import PartitionSpec, partition


@pytest.fixture(scope="module")
def digits_three_sites() -> tuple[list[ImageSet], ImageSet]:
    splits = load_dataset("digits", seed=0)
    parts = partition(splits.train.labels, 3, PartitionSpec.parse("iid"), 0)
    return [splits.train.subset(p) for p in parts], splits.test


@pytest.mark.flower
def test_fedavg_on_digits_learns_averages_by_examples_and_counts_uploads(digits_three_sites, monkeypatch):
    from flwr.serverapp.strategy import FedAvg

    sites, test = digits_three_sites
    sites = [sites[0].subset(np.arange(160)), *sites[1:]]  # unequal sites, so weighting by examples shows
    # Flower's aggregation runs in this process (the ServerApp's thread): record what it was given and made
    rounds_seen: list[tuple[dict[int, tuple[dict, int]], dict]] = []
    original = FedAvg.aggregate_train

    def recording(self, server_round, replies):
        replies = list(replies)
        arrays, metrics = original(self, server_round, replies)
        sent = {
            int(m.content.config_records["site"]["partition-id"]):
            (m.content["arrays"].to_torch_state_dict(), int(m.content["metrics"]["num-examples"]))
            for m in replies
        }
        rounds_seen.append((sent, arrays.to_torch_state_dict()))
        return arrays, metrics

    monkeypatch.setattr(FedAvg, "aggregate_train", recording)
    train = TrainConfig(epochs=1, min_steps=30)
    settings = FedAvgSettings(rounds=3, local_epochs=1, seed=0)
    result = run_fedavg(sites, test, train, settings)

    # chance is 0.1 and the initial model is about there; 3 rounds of 30 local steps reach about 0.87.
    # Accuracy alone cannot tell sound averaging from, e.g., a sum (GroupNorm hides weight scale),
    # hence the round-by-round checks below.
    assert result.test_accuracy > 0.7, result.test_accuracy
    assert not result.model.training and result.rounds == 3 and result.seconds > 0

    config = ClassifierConfig(in_channels=1, height=8, width=8, num_classes=10, channels=32)
    global_weights = build_classifier(config, 0).state_dict()
    assert len(rounds_seen) == 3
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the clients, so that the replay is the same computation
    try:
        for server_round, (sent, aggregated) in enumerate(rounds_seen, start=1):
            assert sorted(sent) == [0, 1, 2]
            assert [sent[i][1] for i in range(3)] == [len(s) for s in sites]
            for i, site in enumerate(sites):  # each site trained as specified, from the global model it was sent
                model = build_classifier(config, 0)
                model.load_state_dict(global_weights)
                train_classifier(model, site.images, one_hot(site.labels, 10),
                                 dataclasses.replace(train, epochs=1, seed=local_seed(0, server_round, i)))
                for key, value in model.state_dict().items():
                    torch.testing.assert_close(sent[i][0][key], value, atol=1e-5, rtol=1e-4)
            total = sum(n for _, n in sent.values())
            for key, value in aggregated.items():  # and the server averaged in proportion to num-examples
                expected = sum(w[key] * (n / total) for w, n in sent.values())
                torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-5)
            global_weights = aggregated
    finally:
        torch.set_num_threads(previous_threads)
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, global_weights[key], atol=0, rtol=0)

    # every site uploads one full float32 copy of the network per round, counted as received
    model_bytes = sum(p.detach().numpy().nbytes for p in build_classifier(config, 0).parameters())
    assert result.bytes_uploaded_per_site == [3 * model_bytes] * 3
    # the server scored the global model after every round: the last score is the final model's
    assert len(result.accuracy_by_round) == 3 and result.accuracy_by_round[-1] == result.test_accuracy
    assert result.accuracy_by_round[0] > 0.3  # one round of 30 steps at every site already learns
    assert result.upload_bytes_by_round == [float(r * model_bytes) for r in (1, 2, 3)]
    assert 0 < result.evaluation_seconds < result.seconds


def test_bad_input_is_refused_before_any_engine_starts(digits_three_sites):
    sites, test = digits_three_sites
    train = TrainConfig(epochs=1, min_steps=1)
    with pytest.raises(ValueError, match="at least one site"):
        run_fedavg([], test, train, FedAvgSettings())
    with pytest.raises(ValueError, match="rounds"):
        run_fedavg(sites, test, train, FedAvgSettings(rounds=0))
    empty = sites[0].subset(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="site 1 holds no images"):
        run_fedavg([sites[0], empty], test, train, FedAvgSettings())
    wider = ImageSet(np.zeros((5, 8, 9, 1), np.uint8), np.zeros(5, np.int64), sites[0].class_names)
    with pytest.raises(ValueError, match="shape"):
        run_fedavg([sites[0], wider], test, train, FedAvgSettings())
    fewer = ImageSet(sites[1].images, sites[1].labels % 2, ("a", "b"))
    with pytest.raises(ValueError, match="classes"):
        run_fedavg([sites[0], fewer], test, train, FedAvgSettings())


def test_local_seeds_differ_by_round_and_site():
    seeds = {local_seed(0, r, s) for r in range(1, 4) for s in range(3)}
    assert len(seeds) == 9
    assert local_seed(0, 1, 0) == local_seed(0, 1, 0)
