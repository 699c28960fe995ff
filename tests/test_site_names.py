"""Site names: one check (shared/site_identity.py) wherever a name enters, compared without regard to case.

A name is the whole string: `hospital-a` followed by a newline is not `hospital-a`, and is refused
rather than trimmed. The commands run through the `fedkr` command (typer's CliRunner), with real keys.
"""

from __future__ import annotations

import json

import pytest
from fedkr.shared.site_identity import KeyringError, check_site_name
from helpers import one_line_error as refused
from helpers import run_fedkr as fedkr


@pytest.mark.parametrize("name", ["hospital-a\n", "hospital-a ", " hospital-a", "hospital\u2010a", "../a", "", "a" * 65])
def test_check_site_name_takes_the_whole_string(name):
    from fedkr.shared.site_identity import site_name_key

    with pytest.raises(KeyringError, match="must be 1-64 letters"):
        check_site_name(name)
    assert check_site_name("hospital-a.2_b") == "hospital-a.2_b"
    assert site_name_key("Hospital-A") == site_name_key("hospital-a")


def test_every_door_refuses_a_name_with_a_trailing_newline(tmp_path):
    keys = tmp_path / "keys"
    refused(fedkr("site", "init", str(keys), "--name", "hospital-a\n"), "site name 'hospital-a\\n' must be")
    assert not (keys / "site.json").exists(), "nothing is written for a refused name"

    # a site file edited by hand to carry the same name is refused at registration, before anything is recorded
    assert fedkr("coordinator", "init", str(tmp_path / "coordinator")).exit_code == 0
    assert fedkr("site", "init", str(keys), "--name", "hospital-a").exit_code == 0
    site = json.loads((keys / "site.json").read_text())
    (tmp_path / "edited.json").write_text(json.dumps({**site, "name": "hospital-a\n"}))
    refused(fedkr("coordinator", "register-site", str(tmp_path / "coordinator"), str(tmp_path / "edited.json"),
                  "--no-flower"), "site name 'hospital-a\\n' must be")
    registry = json.loads((tmp_path / "coordinator" / "sites.json").read_text())
    assert registry["sites"] == {}

    # the name a standalone audit files its report under
    refused(fedkr("audit", str(tmp_path / "release"), "--data", "digits", "--site-name", "../hospital-a"),
            "site name '../hospital-a' must be")


def test_names_that_differ_only_in_case_are_one_site(tmp_path):
    coordinator = tmp_path / "coordinator"
    assert fedkr("coordinator", "init", str(coordinator)).exit_code == 0
    for folder, name in (("a", "hospital-a"), ("b", "Hospital-A")):
        assert fedkr("site", "init", str(tmp_path / folder), "--name", name).exit_code == 0
    first = fedkr("coordinator", "register-site", str(coordinator), str(tmp_path / "a" / "site.json"), "--no-flower")
    assert first.exit_code == 0, first.stderr
    refused(fedkr("coordinator", "register-site", str(coordinator), str(tmp_path / "b" / "site.json"), "--no-flower"),
            "site 'Hospital-A' is already registered as 'hospital-a'")
    listed = fedkr("coordinator", "sites", str(coordinator))
    assert listed.exit_code == 0 and listed.stdout.count("ospital-") == 1, listed.stdout


def test_node_config_and_wire_names_pass_the_same_check():
    from fedkr.client.node_config import SiteSettings
    from fedkr.shared import codec
    from fedkr.shared.config import ConfigError
    from fedkr.shared.reports import FitReport

    with pytest.raises(ConfigError, match="site-name"):
        SiteSettings.parse({}, {"data-path": "digits", "site-name": "hospital-a\n"}, node_id=1)
    report = FitReport(site_id="hospital-a\n", num_members=10, num_holdout=2, class_names=("a",), image_shape=(8, 8, 1),
                       member_class_counts=(10,), teacher_holdout_accuracy=0.5, generator_final_loss=0.1,
                       teacher_seconds=1.0, generator_seconds=1.0)
    data = codec.encode_fit_report(report, run_id="r1")
    with pytest.raises(codec.CodecError, match="site name 'hospital-a\\\\n' must be"):
        codec.decode_fit_report(data, run_id="r1")
    good = codec.decode_fit_report(codec.encode_fit_report(FitReport(**{**report.__dict__, "site_id": "hospital-a"}),
                                                           run_id="r1"), run_id="r1")
    assert good.site_id == "hospital-a"
