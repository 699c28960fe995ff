"""Shared fixtures: small, real data and one small in-process run reused by several tests."""

from __future__ import annotations

import pytest
import torch


torch.set_num_threads(2)

#: Markers whose tests take minutes (Ray, real processes, real datasets): each also counts as `slow`,
#: so `pytest -m "not slow"` is the fast loop and plain `pytest` runs everything.
SLOW_MARKERS = ("flower", "deployment", "medmnist")
#: Fixtures that run a whole pipeline: a test that uses one is slow too.
SLOW_FIXTURES = ("inprocess_run",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_MARKERS) or set(SLOW_FIXTURES) & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def digits_sites(tmp_path_factory):
    from fedkr.client.site import Site
    from fedkr.client.site_data import SiteDataSpec, load_site_data

    root = tmp_path_factory.mktemp("sites")
    return [
        Site(f"site-{i}", load_site_data(SiteDataSpec("digits", i, 3, "iid", 0, 0.2)), root / f"site-{i}")
        for i in range(3)
    ]


@pytest.fixture(scope="session")
def inprocess_sent(digits_sites):
    """What each site of `inprocess_run` answered, as the bytes the in-process link received, by site id."""
    return {}


@pytest.fixture(scope="session")
def inprocess_run(tmp_path_factory, digits_sites, inprocess_sent):
    """One whole pipeline run on digits through the in-process link (about a minute on 2 cores)."""
    from fedkr.inprocess import InProcessLink
    from fedkr.server.coordinator import Coordinator
    from fedkr.shared.data import load_digits_splits
    from helpers import RecordingSite, tiny_run_config

    out = tmp_path_factory.mktemp("runs")
    config = tiny_run_config(out)
    sites = [RecordingSite(site) for site in digits_sites]
    outcome = Coordinator(config, load_digits_splits().test).run(InProcessLink(sites))
    inprocess_sent.update({site.site_id: site.sent for site in sites})
    return config, outcome
