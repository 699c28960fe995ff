"""The "Flower FedAvg" baseline: sites train the project's student network together by weight averaging.

Why it exists: fedkr's sites share only soft-labelled synthetic images, once; the obvious
alternative is plain federated averaging, where every site uploads a full copy of the weights on
every round. This module runs that alternative with Flower's own `FedAvg` strategy (message API)
through Flower's simulation engine, on the same `CompactCNN` and the same training protocol
(`train_classifier`) as fedkr's teachers and student, so that a benchmark can put accuracy, upload
volume and wall time of the two side by side without either getting a different network or optimizer.

How the pieces travel (the Ray backend runs each ClientApp call in a separate actor process and
pickles the ClientApp on every call):
- site data is written once per run to a temporary folder (one ``.npz`` per site) and an actor
  loads a site's file the first time it serves that site, then keeps it; only the folder's path
  travels with the pickled ClientApp, so no image crosses Ray's object store per message;
- the global weights travel server -> site and site -> server as `ArrayRecord`s; each reply carries
  one `MetricRecord` (``num-examples``, FedAvg's weighting key, and the training loss) and one
  `ConfigRecord` naming the partition id, so the server can attribute the bytes it received;
- the server counts, per reply, the bytes of the arrays the site returned, and evaluates the
  final global model on the test set in its own process.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedkr.shared.classifier import (
    ClassifierConfig,
    CompactCNN,
    TrainConfig,
    accuracy,
    build_classifier,
    one_hot,
    train_classifier,
)
from fedkr.shared.data import ImageSet

if TYPE_CHECKING:  # flwr is imported where it is used, so that importing this module stays cheap
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

#: FedAvg's default weighting key: the server averages weights in proportion to it.
NUM_EXAMPLES_KEY = "num-examples"
#: Name of the ConfigRecord in which a client says which partition (site) it is.
SITE_RECORD = "site"
PARTITION_ID_KEY = "partition-id"


@dataclass(frozen=True)
class FedAvgSettings:
    """How long and how wide the federated run is; the training protocol itself is a `TrainConfig`."""

    #: Federated rounds; every site uploads its whole model once per round.
    rounds: int = 10
    #: Epochs each site trains per round: `rounds * local_epochs` is the compute budget that
    #: compares with a teacher's `epochs` in fedkr (each site sees its data that many times).
    local_epochs: int = 3
    #: Seeds the initial global model and, with round and site, each local training run.
    seed: int = 0
    #: CompactCNN width, as in `ClassifierConfig.channels`.
    channels: int = 32
    #: Keep every weight upload the server receives (`FedAvgResult.uploads`), for the bench's
    #: coordinator-view attacks; off by default (rounds x sites copies of the network in memory).
    keep_uploads: bool = False


@dataclass
class FedAvgResult:
    """What the benchmark compares: accuracy, what the sites sent, and how long it took."""

    #: The final global model, in eval mode.
    model: CompactCNN
    test_accuracy: float
    #: Bytes of weights each site sent to the server over all rounds (the `nbytes` of the arrays
    #: in its replies, as received by the server), in site order. Flower's `.npy` framing adds
    #: about 128 bytes per array on top of this; those are serialization overhead, not weights.
    bytes_uploaded_per_site: list[int]
    rounds: int
    #: Wall time of the whole federated run (`run_simulation`, engine start-up included), less the
    #: server's scoring of the global model after each round (`evaluation_seconds`).
    seconds: float
    #: With `FedAvgSettings.keep_uploads`: per round (0-based), per site (in site order), the state
    #: dict the site uploaded after its local training; empty otherwise.
    uploads: list[list[dict[str, torch.Tensor]]] = dataclasses.field(default_factory=list)
    #: Test accuracy of the global model after each round (index r: after round r + 1), evaluated by
    #: the server (Flower's `evaluate_fn`); the last entry is `test_accuracy`. Rounds 1 to r of this
    #: run, whose local steps per round were sized for all `rounds`: not a FedAvg run configured for r.
    accuracy_by_round: list[float] = dataclasses.field(default_factory=list)
    #: Bytes of weights a site had sent by the end of each round (index r: rounds 1 to r + 1), mean over
    #: sites.
    upload_bytes_by_round: list[float] = dataclasses.field(default_factory=list)
    #: Seconds the server spent scoring the global model after the rounds (not in `seconds`).
    evaluation_seconds: float = 0.0


def run_fedavg(sites: list[ImageSet], test: ImageSet, train: TrainConfig, settings: FedAvgSettings) -> FedAvgResult:
    """Train one `CompactCNN` over `sites` with Flower's FedAvg and return it with its cost.

    `sites` are the images each simulated hospital trains on (site i is Flower partition i);
    `train` is the local training protocol, used with `epochs=settings.local_epochs` and a seed
    derived from `settings.seed`, the round and the site. The server scores the global model on
    `test` after every round, so one run gives FedAvg's accuracy against its upload. Raises
    ValueError on unusable input before any engine starts, and RuntimeError if a site fails during the run (a baseline with
    a silently missing site would not be the baseline the benchmark claims).
    """
    model_config = _check_inputs(sites, test, settings)
    from flwr.simulation import run_simulation

    with tempfile.TemporaryDirectory(prefix="fedkr-fedavg-") as data_dir:
        for index, site in enumerate(sites):
            np.savez(_site_file(data_dir, index), images=site.images, labels=site.labels)
        setup = _ClientSetup(data_dir=data_dir, model_config=model_config, train=train, local_epochs=settings.local_epochs)
        outcome: list[_ServerOutcome | Exception] = []
        server_app = _build_server_app(len(sites), model_config, settings, test, outcome)
        client_app = _build_client_app(setup)
        backend_config = {
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": 2, "num_gpus": 0, "log_to_driver": True, "logging_level": "ERROR"},
        }
        start = time.perf_counter()
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(sites),
                       backend_config=backend_config)
        seconds = time.perf_counter() - start
        evaluation_seconds = sum(outcome[0].evaluation_seconds) if outcome and isinstance(outcome[0], _ServerOutcome) else 0.0
    if not outcome:
        raise RuntimeError("the FedAvg simulation ended before the server finished; see Flower's log above")
    done = outcome[0]
    if not isinstance(done, _ServerOutcome):
        raise RuntimeError(f"FedAvg run failed: {done}") from done  # noqa: TRY004 - a failure, not a type error
    model = build_classifier(model_config, settings.seed)
    model.load_state_dict(done.state_dict)
    model.eval()
    return FedAvgResult(
        model=model,
        test_accuracy=accuracy(model, test.images, test.labels),
        bytes_uploaded_per_site=done.bytes_per_site,
        rounds=settings.rounds,
        seconds=seconds - evaluation_seconds,
        uploads=done.uploads,
        accuracy_by_round=done.accuracy_by_round,
        upload_bytes_by_round=done.upload_bytes_by_round,
        evaluation_seconds=evaluation_seconds,
    )


def _check_inputs(sites: list[ImageSet], test: ImageSet, settings: FedAvgSettings) -> ClassifierConfig:
    """Refuse input the run could not use, with a message naming what is wrong; returns the network's config."""
    for name in ("rounds", "local_epochs", "channels"):
        if getattr(settings, name) < 1:
            raise ValueError(f"FedAvgSettings.{name} must be at least 1, got {getattr(settings, name)}")
    if not sites:
        raise ValueError("FedAvg needs at least one site")
    first = sites[0]
    for index, site in enumerate(sites):
        if len(site) == 0 or site.images.shape[0] == 0:
            raise ValueError(f"site {index} holds no images")
        if site.images.ndim != 4 or site.images.shape[0] != len(site):
            raise ValueError(f"site {index}: images {tuple(site.images.shape)} do not match {len(site)} labels as (N,H,W,C)")
        if site.image_shape != first.image_shape:
            raise ValueError(f"site {index} has images of shape {site.image_shape}, site 0 has {first.image_shape}")
        if site.class_names != first.class_names:
            raise ValueError(f"site {index} has classes {site.class_names}, site 0 has {first.class_names}")
        if site.labels.min() < 0 or site.labels.max() >= site.num_classes:
            raise ValueError(f"site {index} has labels outside [0, {site.num_classes})")
    if len(test) == 0:
        raise ValueError("the test set holds no images")
    if test.image_shape != first.image_shape:
        raise ValueError(f"test images have shape {test.image_shape}, the sites' {first.image_shape}")
    if test.class_names != first.class_names:
        raise ValueError(f"test classes {test.class_names} differ from the sites' {first.class_names}")
    height, width, in_channels = first.image_shape
    return ClassifierConfig(in_channels=in_channels, height=height, width=width,
                            num_classes=first.num_classes, channels=settings.channels)


def local_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A local run's seed: distinct per (seed, round, site), and the same on every repetition."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


def weights_nbytes(arrays: Iterable[Array]) -> int:
    """Bytes of weights in Flower `Array`s, decoded as received (not the shape and dtype they claim)."""
    return sum(int(a.numpy().nbytes) for a in arrays)


# --- client side (runs in a Ray actor process) ---------------------------------------------------


@dataclass(frozen=True)
class _ClientSetup:
    """What every ClientApp call needs besides the message; small, pickled with the app each call."""

    data_dir: str
    model_config: ClassifierConfig
    train: TrainConfig
    local_epochs: int


def _site_file(data_dir: str, partition_id: int) -> Path:
    return Path(data_dir) / f"site-{partition_id}.npz"


#: Per actor process: the run folder whose site data is cached, and that data by partition id.
#: Module level (the ClientApp's handler reaches it through `_client_train`, which Ray's pickling
#: imports by reference) so that it survives between calls; a new run's folder replaces it.
_CACHE: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}


def _site_data(data_dir: str, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    if data_dir not in _CACHE:
        _CACHE.clear()
        _CACHE[data_dir] = {}
    sites = _CACHE[data_dir]
    if partition_id not in sites:
        with np.load(_site_file(data_dir, partition_id), allow_pickle=False) as archive:
            sites[partition_id] = (archive["images"], archive["labels"])
    return sites[partition_id]


def _client_train(msg: Message, context: Context, setup: _ClientSetup) -> Message:
    """One round at one site: load the global weights, train `local_epochs` epochs, reply with the weights."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    torch.set_num_threads(1)  # one CPU per client (client_resources); more threads only contend
    partition_id = int(context.node_config[PARTITION_ID_KEY])
    server_round = int(msg.content["config"]["server-round"])
    seed = int(msg.content["config"]["seed"])
    images, labels = _site_data(setup.data_dir, partition_id)
    model = build_classifier(setup.model_config, seed)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    config = dataclasses.replace(setup.train, epochs=setup.local_epochs,
                                 seed=local_seed(seed, server_round, partition_id))
    losses = train_classifier(model, images, one_hot(labels, setup.model_config.num_classes), config)
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({NUM_EXAMPLES_KEY: int(labels.shape[0]), "train-loss": float(losses[-1])}),
        SITE_RECORD: ConfigRecord({PARTITION_ID_KEY: partition_id}),
    })
    return Message(content, reply_to=msg)


def _build_client_app(setup: _ClientSetup) -> ClientApp:
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _client_train(msg, context, setup)

    return app


# --- server side (runs in a thread of the calling process) ---------------------------------------


@dataclass
class _ServerOutcome:
    state_dict: dict[str, torch.Tensor]
    bytes_per_site: list[int]
    uploads: list[list[dict[str, torch.Tensor]]]
    accuracy_by_round: list[float]
    upload_bytes_by_round: list[float]
    evaluation_seconds: list[float]


def _counting_fedavg(num_sites: int, keep_uploads: bool = False) -> FedAvg:
    """Flower's FedAvg, unchanged in what it averages, that also counts each site's uploaded bytes
    (and, with `keep_uploads`, keeps a copy of every upload, by round and partition).

    Every site trains every round (`min_train_nodes = num_sites`); client-side evaluation is off
    because the server scores the global model on the test set itself.
    """
    from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

    class CountingFedAvg(FlowerFedAvg):
        def __init__(self) -> None:
            super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=num_sites,
                             min_available_nodes=num_sites, weighted_by_key=NUM_EXAMPLES_KEY)
            self.bytes_by_node: dict[int, int] = {}
            #: each round's upload, all sites together, in bytes
            self.round_bytes: dict[int, int] = {}
            self.partition_of_node: dict[int, int] = {}
            self.uploads: dict[int, dict[int, dict[str, torch.Tensor]]] = {}

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            failed = [f"node {m.metadata.src_node_id}: {m.error.reason[:300]}" for m in replies if m.has_error()]
            if failed or len(replies) != num_sites:
                raise RuntimeError(
                    f"round {server_round}: {len(replies) - len(failed)} of {num_sites} sites replied"
                    + (f"; {'; '.join(failed)}" if failed else "")
                )
            this_round = 0
            for reply in replies:
                node = reply.metadata.src_node_id
                partition_id = int(reply.content.config_records[SITE_RECORD][PARTITION_ID_KEY])
                known = self.partition_of_node.setdefault(node, partition_id)
                if known != partition_id:
                    raise RuntimeError(f"node {node} reported partition {partition_id}, earlier {known}")
                sent = sum(weights_nbytes(record.values()) for record in reply.content.array_records.values())
                self.bytes_by_node[node] = self.bytes_by_node.get(node, 0) + sent
                this_round += sent
                if keep_uploads:
                    record = next(iter(reply.content.array_records.values()))
                    self.uploads.setdefault(server_round, {})[partition_id] = record.to_torch_state_dict()
            self.round_bytes[server_round] = this_round
            return super().aggregate_train(server_round, replies)

        def bytes_per_site(self) -> list[int]:
            by_partition: dict[int, int] = {}
            for node, partition_id in self.partition_of_node.items():
                if partition_id in by_partition:
                    raise RuntimeError(f"partition {partition_id} was reported by two nodes")
                by_partition[partition_id] = self.bytes_by_node[node]
            if sorted(by_partition) != list(range(num_sites)):
                raise RuntimeError(f"replies came from partitions {sorted(by_partition)}, expected 0..{num_sites - 1}")
            return [by_partition[i] for i in range(num_sites)]

        def uploads_by_round(self) -> list[list[dict[str, torch.Tensor]]]:
            return [[self.uploads[r][i] for i in range(num_sites)] for r in sorted(self.uploads)]

        def upload_bytes_by_round(self) -> list[float]:
            """Per site (mean over sites), bytes sent by the end of each round."""
            return [float(b) / num_sites for b in np.cumsum([self.round_bytes[r] for r in sorted(self.round_bytes)])]

    return CountingFedAvg()


def _build_server_app(num_sites: int, model_config: ClassifierConfig, settings: FedAvgSettings, test: ImageSet,
                      outcome: list[_ServerOutcome | Exception]) -> ServerApp:
    """The ServerApp runs in a thread of this process, so it hands its result back through `outcome`."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import ServerApp

    app = ServerApp()
    evaluation_seconds: list[float] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """The global model's test accuracy after `server_round` (round 0, the initial model, is not scored)."""
        if server_round == 0:
            return None
        started = time.perf_counter()
        model = build_classifier(model_config, settings.seed)
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        score = accuracy(model, test.images, test.labels)
        evaluation_seconds.append(time.perf_counter() - started)
        return MetricRecord({"accuracy": score})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            strategy = _counting_fedavg(num_sites, settings.keep_uploads)
            initial = build_classifier(model_config, settings.seed)
            result = strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord(initial.state_dict()),
                num_rounds=settings.rounds,
                train_config=ConfigRecord({"seed": settings.seed}),
                evaluate_fn=evaluate,
            )
            scored = result.evaluate_metrics_serverapp
            outcome.append(_ServerOutcome(
                result.arrays.to_torch_state_dict(), strategy.bytes_per_site(),  # type: ignore[attr-defined]
                strategy.uploads_by_round(),  # type: ignore[attr-defined]
                [float(scored[r]["accuracy"]) for r in range(1, settings.rounds + 1)],
                strategy.upload_bytes_by_round(), evaluation_seconds))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - reported by run_fedavg, not just logged by Flower's thread
            outcome.append(exc)

    return app
