"""The fitted run a benchmark reuses: its command-line arguments and the settings its file saved.

`levers.py`, `label_probe.py`, `shard_check_power.py`, `relabel_combine.py`, `teacher_resolution.py` and
`teacher_refit.py` start from a finished `fedkr simulate` run (or a bench): its sites folder, its run id,
and its metrics.json (a refused run's refusal.json; all but `label_probe.py` also read a bench.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedkr.bench import FIT_SETTINGS_ADDED_LATER, same_data
from fedkr.client.site import has_fit, load_teacher, run_models_dir
from fedkr.shared.classifier import CompactCNN
from fedkr.shared.config import ConfigError, RunConfig
from fedkr.shared.data import load_dataset
from fedkr.shared.image_set import ImageSet
from fedkr.shared.json_input import JSONInputError, read_json_file
from fedkr.shared.release_inspect import METRICS_LIMITS
from fedkr.shared.reports import FitReport


def add_fit_arguments(parser: argparse.ArgumentParser,
                      reports_help: str = "the fit run's metrics.json (a refused run's refusal.json, or a bench.json)") -> None:
    """Add the arguments that name the fitted run: --data, --sites, --partition, --sites-dir, --fit-run, and
    --fit-reports with `reports_help` (which files the script reads)."""
    parser.add_argument("--data", required=True, help="the fit run's data (a path, or digits)")
    parser.add_argument("--sites", type=int, required=True, help="the fit run's number of sites")
    parser.add_argument("--partition", required=True, help="the fit run's partition (iid, dirichlet:ALPHA)")
    parser.add_argument("--sites-dir", type=Path, required=True, help="the fit run's sites folder (OUT/sites)")
    parser.add_argument("--fit-run", required=True, help="the fit run's id")
    parser.add_argument("--fit-reports", type=Path, required=True, help=reports_help)


def read_fit_file(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The saved metrics in `path` (a refusal.json's `metrics`); exits through `parser.error` with one line
    when the file is missing, not JSON, over `METRICS_LIMITS`, or not a JSON object."""
    try:
        saved = read_json_file(path, limits=METRICS_LIMITS)
    except JSONInputError as exc:
        parser.error(str(exc))
    if not isinstance(saved, dict):
        parser.error(f"{path}: not a metrics.json, refusal.json or bench.json")
    saved = saved.get("metrics", saved)  # a refused run's refusal.json holds its metrics
    if not isinstance(saved, dict):
        parser.error(f"{path}: its metrics are not a JSON object")
    return saved


def fit_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """The fit run's settings under Python names (`dp_epsilon`): a run's metrics.json `config`, a bench.json's
    `profile.run` (every run setting but the run id); {} when the file holds neither."""
    settings = saved.get("config") or (saved.get("profile") or {}).get("run") or {}
    return {str(key).replace("-", "_"): value for key, value in settings.items()} if isinstance(settings, dict) else {}


def fit_reports(parser: argparse.ArgumentParser, path: Path, saved: dict[str, Any]) -> dict[str, FitReport]:
    """The sites' fit reports in the saved metrics of `path` (`read_fit_file`), by site id in the file's order;
    exits through `parser.error` with one line when there are none or one is malformed."""
    raw = saved.get("sites") or saved.get("fit") or {}
    if not isinstance(raw, dict) or not raw:
        parser.error(f"{path}: no fit reports (a metrics.json or bench.json with 'sites' or 'fit')")
    try:
        return {str(sid): FitReport.from_dict(report) for sid, report in raw.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        parser.error(f"{path}: a site's fit report is malformed ({type(exc).__name__}: {exc})")


def fit_models_dirs(parser: argparse.ArgumentParser, sites_dir: Path, fit_run: str, sites: list[str]) -> dict[str, Path]:
    """The folders where the fit run `fit_run` saved its teacher and generator at `sites` (site ids) under
    `sites_dir`, by site id in `sites`' order, a run that reused another's fit followed to it; exits through
    `parser.error` with one line when one is missing or holds no fit."""
    folders = {}
    for sid in sites:
        try:
            models = run_models_dir(sites_dir / sid, fit_run)[0]
        except (ValueError, JSONInputError) as exc:
            parser.error(f"{sid}: {exc}")
        if not has_fit(models):
            parser.error(f"{models} holds no fitted teacher and generator")
        folders[sid] = models
    return folders


def fit_teachers(parser: argparse.ArgumentParser, models_dirs: dict[str, Path]) -> dict[str, CompactCNN]:
    """The teachers saved in `models_dirs` (site id -> folder, `fit_models_dirs`), by site id in the same order;
    exits through `parser.error` with one line when one is unreadable."""
    teachers = {}
    for sid, models in models_dirs.items():
        try:
            teachers[sid] = load_teacher(models)
        except (ValueError, OSError) as exc:  # JSONInputError: teacher.json malformed
            parser.error(f"{sid}: {exc}")
    return teachers


def dashed(settings: dict) -> dict:
    """`settings` under dashed keys (metrics.json holds Python names, bench.json and the command line dashed ones)."""
    return {str(key).strip().replace("_", "-"): value for key, value in settings.items()}


def check_fit_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: dict[str, Any],
                        extra: tuple[tuple[str, str, Any], ...] = ()) -> None:
    """Exit through `parser.error` with one line when --data, --sites or --partition (or an `extra` entry,
    (flag, Python name, value given; None: not given)) differs from the fit's `settings` (`fit_settings`):
    the sites' data would differ from the fit's. A setting the file does not hold is not checked."""
    if "data" in settings and not same_data(str(settings["data"]), args.data):
        parser.error(f"--data {args.data} is not the fit run's data ({settings['data']})")
    for flag, key, given in (("--sites", "sites", args.sites), ("--partition", "partition", args.partition), *extra):
        if given is not None and key in settings and settings[key] != given:
            parser.error(f"{flag} {given} is not the fit run's {key} ({settings[key]}): the sites' data would differ")


def fit_run_config(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: dict[str, Any],
                   extra: tuple[tuple[str, str, Any], ...] = ()) -> RunConfig:
    """The fit's `RunConfig`: the defaults with the fit's `settings` (`fit_settings`) over them, after
    `check_fit_arguments` (with its `extra` flags); a setting the file predates
    (`fedkr.bench.FIT_SETTINGS_ADDED_LATER`) is at its first default where the file holds settings, as
    `fedkr bench` reads a reused fit. Exits through `parser.error` with one line naming --fit-reports when
    a setting has a bad value."""
    check_fit_arguments(parser, args, settings, extra)
    predated = dashed(FIT_SETTINGS_ADDED_LATER) if settings else {}
    fit = {**RunConfig().to_flat(), **predated, **dashed(settings)}
    try:
        return RunConfig.from_flat({k: v for k, v in fit.items() if k.replace("-", "_") in RunConfig.__dataclass_fields__})
    except ConfigError as exc:
        parser.error(f"{args.fit_reports}: {exc}")


def read_fit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[RunConfig, dict[str, FitReport]]:
    """The fit run's `RunConfig` (`fit_run_config`) and its reports by site id (`fit_reports`), read from
    --fit-reports once; exits through `parser.error` with one line where either cannot be read."""
    saved = read_fit_file(parser, args.fit_reports)
    return fit_run_config(parser, args, fit_settings(saved)), fit_reports(parser, args.fit_reports, saved)


def fit_test_split(parser: argparse.ArgumentParser, data: str, seed: int, image_size: int) -> ImageSet:
    """The real test split of `data` as a fit drew it: with the fit's `seed` (digits, an image folder and a
    manifest without a split draw their test part by it) and working `image_size` (pixels), as
    `RunConfig.seed` and `RunConfig.image_size` hold them (not a run's separate `test_data`); exits
    through `parser.error` with one line when fedkr cannot load the data or it has no test split."""
    try:
        test = load_dataset(data, seed=seed, image_size=image_size).test
    except ValueError as exc:  # DataError: data fedkr cannot load
        parser.error(str(exc))
    if test is None:
        parser.error(f"--data {data} has no test split to score on")
    return test
