"""One home for every setting: RunConfig's defaults, pyproject's Flower app config, the CLI and the profiles agree."""

from __future__ import annotations

import tomllib

import click
import pytest
import typer

from fedkr.shared.config import PROFILES, ConfigError, RunConfig
from helpers import REPO

#: CLI options named otherwise than the RunConfig setting they fall back to.
OPTION_SETTING = {"reference_models": "audit_reference_models", "lira": "audit_lira", "hflip": "generator_hflip",
                  "max_auc": "audit_max_auc", "max_tpr": "audit_max_tpr", "max_distance_auc": "audit_max_distance_auc",
                  "max_generator_auc": "audit_max_generator_auc", "min_utility": "audit_min_utility",
                  "min_adjusted_balanced_accuracy": "audit_min_adjusted_balanced_accuracy",
                  "epochs": "student_epochs"}
#: Options that share a setting's name but mean something else: where a bench or an audit report is written.
NOT_SETTINGS = {("bench", "out"), ("audit", "out")}


def flower_app_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_flower_config_holds_exactly_the_typed_defaults():
    declared = flower_app_config()
    defaults = RunConfig(run_id="x").to_flat()
    assert set(declared) == set(defaults), set(declared) ^ set(defaults)
    for key, value in defaults.items():
        if key == "run-id":
            assert declared[key] == "", "an empty run id asks for a fresh one"
            continue
        assert declared[key] == value and type(declared[key]) is type(value), (key, declared[key], value)


def _commands() -> dict[str, click.Command]:
    from fedkr.cli import app

    group = typer.main.get_command(app)
    return {name: cmd for name, cmd in group.commands.items() if not isinstance(cmd, click.Group)}  # type: ignore[attr-defined]


def test_no_cli_option_carries_a_default_of_its_own():
    settings = set(RunConfig.__dataclass_fields__)
    checked = 0
    for name, command in _commands().items():
        for param in command.params:
            setting = OPTION_SETTING.get(param.name, param.name)
            if isinstance(param, click.Option) and setting in settings and (name, param.name) not in NOT_SETTINGS:
                checked += 1
                assert param.default is None, f"fedkr {name} --{param.name} has its own default {param.default!r}"
    assert checked >= 30


def _all_commands() -> list[click.Command]:
    from fedkr.cli import app

    found, todo = [], [typer.main.get_command(app)]
    while todo:
        command = todo.pop()
        found.append(command)
        todo.extend(getattr(command, "commands", {}).values())
    return found


def test_no_help_text_is_eaten_by_rich_markup():
    """Help is rendered as rich markup: an unescaped "[default: ...]" reads as a style tag and vanishes."""
    from rich.text import Text

    texts = [text for command in _all_commands() for text in
             [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]]
    assert len(texts) > 100
    for text in texts:
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text


def test_help_shows_each_setting_default():
    from typer.testing import CliRunner

    from fedkr.cli import app

    simulate = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "400"})
    assert simulate.exit_code == 0, simulate.output
    assert f"[default: {RunConfig(run_id='x').partition}]" in simulate.output
    assert simulate.output.count("[default: ") >= 30
    bench = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "400"})
    assert bench.exit_code == 0, bench.output
    assert bench.output.count("[default: the profile's]") >= 8


def test_simulate_and_flwr_run_with_no_settings_run_the_same_configuration(monkeypatch):
    """`fedkr simulate --data digits` and `flwr run .` (pyproject's config, parsed by the ServerApp and the ClientApp)."""
    from typer.testing import CliRunner

    import fedkr.cli as cli
    from fedkr.client.node_config import SiteSettings

    seen: list[RunConfig] = []
    monkeypatch.setattr(cli, "_run", lambda config, verbose: seen.append(config))
    result = CliRunner().invoke(cli.app, ["simulate", "--data", "digits"])
    assert result.exit_code == 0, result.output
    simulate = seen[0].to_flat()
    flower = RunConfig.from_flat(flower_app_config()).to_flat()
    simulate.pop("run-id"), flower.pop("run-id")
    assert simulate == flower
    # a site parses the same run config, from pyproject (flwr run .) or as simulation passes it to its sites
    node = {"partition-id": 1, "num-partitions": seen[0].sites}
    assert SiteSettings.parse(flower_app_config(), node, 7) == SiteSettings.parse(seen[0].to_flat(), node, 7)


def test_profiles_are_overrides_over_the_defaults_and_print(monkeypatch):
    from typer.testing import CliRunner

    from fedkr.cli import app

    assert PROFILES["default"].run_config(run_id="x") == RunConfig(run_id="x")
    full = PROFILES["full"].run_config(run_id="x")
    assert full.generator_hflip and not RunConfig().generator_hflip
    demo = PROFILES["demo"].run_config(out="elsewhere", run_id="x")
    assert (demo.sites, demo.ipc, demo.generator_steps, demo.out) == (2, 20, 200, "elsewhere")
    assert demo.dp_config() is not None and demo.dp_config().models == "generator" and demo.holdout_fraction == 0.5
    assert RunConfig.from_profile("demo", ipc=None).ipc == 20, "None means not given"
    printed = CliRunner().invoke(app, ["config", "--profile", "full"])
    assert printed.exit_code == 0
    assert "generator-hflip = true  # *" in printed.output and "ipc = 400\n" in printed.output
    assert "fedavg-rounds = 5" in printed.output
    bad = CliRunner().invoke(app, ["config", "--profile", "huge"])
    assert bad.exit_code == 2 and "profile must be one of" in bad.output


@pytest.mark.parametrize("flat, message", [
    ({"rounds": "two"}, "setting 'rounds' has a bad value"),
    ({"relabel": "maybe"}, "setting 'relabel' has a bad value"),
    ({"ipc": 2.5}, "setting 'ipc' has a bad value"),
    ({"no-such-key": 1}, "unknown setting 'no-such-key'"),
    ({"audit-reference-models": 9}, "between 2 and 8"),
    ({"student-ipc": -1}, "student-ipc must be >= 0"),
    ({"drawn-class-weight": 1.5}, "drawn-class-weight must be in"),
    ({"drawn-class-weight": "nan"}, "drawn-class-weight must be in"),
    ({"relabel-combine": "vote"}, "relabel-combine must be one of support, label-shift"),
    ({"generator-teacher-guidance": -1}, "generator-teacher-guidance must be between 0"),
    ({"generator-teacher-guidance": 11}, "generator-teacher-guidance must be between 0"),
    ({"generator-teacher-guidance": 1, "generator-kind": "dp-merf"}, "generator-teacher-guidance needs generator-kind 'diffusion'"),
    ({"generator-teacher-guidance": 1, "dp-epsilon": 8, "dp-models": "generator"},
     "generator-teacher-guidance 1 needs a teacher trained with DP.*; set dp-models teacher.generator or generator-teacher-guidance 0"),
])
def test_flat_settings_are_typed_and_checked(flat, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_flat(flat)


def test_teacher_guidance_reaches_the_generator_settings_where_its_teacher_is_private():
    guided = RunConfig.from_flat({"generator-teacher-guidance": "0.3", "dp-epsilon": "8"})
    assert guided.generator_config().classifier_guidance == 0.3
    assert RunConfig().generator_config().classifier_guidance == 0.0, "off by default"
    # without DP, or with the generator alone private and no teacher guidance, nothing is refused
    assert RunConfig.from_flat({"generator-teacher-guidance": "1"}).generator_teacher_guidance == 1.0
    assert RunConfig.from_flat({"dp-epsilon": "8", "dp-models": "generator"}).generator_teacher_guidance == 0.0


def test_a_bad_option_is_a_one_line_error():
    from typer.testing import CliRunner

    from fedkr.cli import app

    result = CliRunner().invoke(app, ["simulate", "--data", "digits", "--generator-guidance", "0.5"])
    assert result.exit_code == 2
    assert "error: generator-guidance must be between 1" in result.output and "Traceback" not in result.output


def test_the_run_config_s_policy_defaults_are_the_audit_policy_s():
    from fedkr.shared.audit_policy import AuditPolicy

    policy, defaults = RunConfig(run_id="x").audit_policy(), AuditPolicy()
    for name in ("min_utility_ratio", "min_adjusted_balanced_accuracy", "max_auc_upper", "max_tpr_at_1pct_fpr",
                 "max_distance_auc_upper", "max_generator_auc_upper", "confidence"):
        assert getattr(policy, name) == getattr(defaults, name), name
