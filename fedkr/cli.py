"""The `fedkr` command: run the demo or a simulation, print a profile, inspect and audit a release, bench.

Every run setting's default lives in `RunConfig` (`fedkr/shared/config.py`): an option left out here
is "not given", and the profile's value (the defaults, unless `--profile` says otherwise) applies.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fedkr.cli_common import console, fail, out_console, print_audit_sites, print_left_out, setup_logging
from fedkr.shared.config import PROFILES, RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fedkr: hospitals share soft-labelled synthetic images, never patients' images.")
coordinator_app = typer.Typer(no_args_is_help=True, help="The coordinator's keys, site registry and release service.")
site_app = typer.Typer(no_args_is_help=True, help="A site's keys and its ledger of everything that left the hospital.")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(site_app, name="site")

#: The defaults every option below falls back to, shown in the help.
DEFAULTS = RunConfig(run_id="defaults")


def privacy_mechanism(config: RunConfig) -> str:
    """One line naming the DP mechanism a private run used at every site (its config has a DP budget)."""
    dp = config.dp_config()
    assert dp is not None
    merf = "DP-MERF (one Gaussian release of class mean embeddings)"
    if dp.generator_only:
        mechanism = merf if config.generator_kind == "dp-merf" else "DP-SGD (opacus)"
        return (f"{mechanism} within epsilon {dp.target_epsilon:g} per site, on each site's generator (the teacher "
                "without DP: the audit's attacks speak for its soft labels)")
    if config.generator_kind == "dp-merf":
        return (f"DP-SGD (opacus) on each site's teacher and {merf} on its generator, within epsilon "
                f"{dp.target_epsilon:g} per site split between them")
    return f"DP-SGD (opacus) within epsilon {dp.target_epsilon:g} per site, on each site's teacher and generator, the budget split between them"

def _d(key: str) -> str:
    """The help text's note of a setting's default."""
    value = getattr(DEFAULTS, key)
    return f" \\[default: {str(value).lower() if isinstance(value, bool) else value}]"


def _run(config: RunConfig, verbose: bool, node_config: dict[str, object] | None = None) -> None:
    from fedkr.server.coordinator import RunError
    from fedkr.shared.config import ConfigError
    from fedkr.shared.data import DataError, load_dataset
    from fedkr.shared.device import DeviceError, describe, resolve_device
    from fedkr.simulation import check_partition, run_flower_simulation

    setup_logging(verbose)
    try:
        device = resolve_device(config.device)
        splits = load_dataset(config.data, seed=config.seed, image_size=config.image_size)
        check_partition(splits, config)
    except (ConfigError, DataError, DeviceError) as exc:
        fail(str(exc))
    console.print(f"computing on {describe(device)} (device {config.device})", highlight=False)
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("starting Flower simulation", total=config.rounds + 4)

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=total)

        try:
            outcome = run_flower_simulation(config, on_progress, verbose, splits, node_config)
        except (DataError, ConfigError) as exc:
            fail(str(exc))
        except RunError as exc:
            fail(f"run failed: {exc}", 1)
    elapsed = time.perf_counter() - started
    m = outcome.metrics
    acc = m.get("student_test_accuracy")
    out_console.print(f"run {config.run_id} finished in {elapsed:.0f} s")
    size = m.get("working_size") or {}
    if size:
        h, w, c = size["images"]
        out_console.print(f"  working size: {h}x{w} px, {c} channel(s); generator {size['generator_resolution']} px")
    out_console.print(f"  student test accuracy: {acc:.4f} on {m.get('test_images')} real test images" if acc is not None else "  no test split: accuracy not measured")
    print_audit_sites(m["audit"]["sites"])
    print_left_out(m.get("sites_left_out") or {})
    dp = config.dp_config()
    if dp is not None:
        out_console.print(f"  privacy mechanism: {privacy_mechanism(config)}")
    if outcome.released:
        out_console.print(f"  release:  {outcome.release_dir}")
        out_console.print(f"  audit:    {outcome.release_dir / 'audit.html'}")
        out_console.print(f"  metrics:  {outcome.release_dir / 'metrics.json'}")
        out_console.print(f"  check it: fedkr inspect {outcome.release_dir}")
    else:
        out_console.print("  [bold red]release refused[/]:", markup=True)
        for reason in m["audit"]["failures"]:
            out_console.print(f"    - {reason}")
        out_console.print(f"  refusal:  {outcome.refusal_path}")
        out_console.print(f"  audit:    {outcome.run_dir / 'audit.html'}")
        raise typer.Exit(3)


def _config(profile: str, **given: object) -> RunConfig:
    """The profile's settings with the options that were given; a bad one ends the command with a one-line error."""
    from fedkr.shared.config import ConfigError

    try:
        return RunConfig.from_profile(profile, **given)
    except ConfigError as exc:
        fail(str(exc))


DEVICE_HELP = ("Where torch computes: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. "
               "Seeded runs on the CPU repeat exactly.")
DATA_HELP = ("'digits', a MedMNIST .npz file, a CSV label manifest (labels.csv, columns path and label; "
             "labels.csv?path=COL&label=COL to name others) or an image folder (one subfolder per class); "
             "image and DICOM files.")
IMAGE_SIZE_HELP = "Working size in pixels: images with a side larger are resized to it as they load."
PROFILE_HELP = f"Named settings to start from: {', '.join(PROFILES)} (`fedkr config --profile NAME` prints one)."


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="Folder for runs." + _d("out"))] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for partitions, splits and training." + _d("seed"))] = None,
    leaky: Annotated[bool, typer.Option("--leaky", help="Train the generators without DP and send their shards without "
                                        "the sites' shard check, the rest unchanged: the audit's white-box attack finds "
                                        "what they memorized and the release is refused.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Two small simulated sites on scikit-learn's bundled digits: the whole pipeline (the demo profile).

    Each site's generator trains with DP-SGD (epsilon 4, the teacher without), which kept the audit's white-box attack on it near chance in the measured runs; the student trains on 160 relabelled images per class, the release holds 20 of them; with --leaky the generators train without DP and the sites send their shards without the shard check (so that every site reaches the audit), to show the audit refusing what they memorize (exit status 3 when it does).
    """
    _run(demo_config(out, seed, leaky), verbose=verbose, node_config=demo_node_config(leaky))


def demo_node_config(leaky: bool) -> dict[str, object] | None:
    """What `fedkr demo` gives every site beyond the run config: with `leaky`, its shard check off (`client/shard_check.py`)."""
    from fedkr.client.shard_check import CHECK_OFF, SHARD_CHECK_KEY

    return {SHARD_CHECK_KEY: CHECK_OFF} if leaky else None


def demo_config(out: Path | None, seed: int | None, leaky: bool) -> RunConfig:
    """The demo profile's settings for `fedkr demo`; `leaky` turns its generators' DP off and changes nothing else."""
    return _config("demo", out=None if out is None else str(out), seed=seed, dp_epsilon=0.0 if leaky else None)


@app.command()
def simulate(
    data: Annotated[str | None, typer.Option(help=DATA_HELP + _d("data"))] = None,
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "default",
    sites: Annotated[int | None, typer.Option(help="Number of simulated hospital sites." + _d("sites"))] = None,
    partition: Annotated[str | None, typer.Option(help="'iid' or 'dirichlet:ALPHA' label skew across sites." + _d("partition"))] = None,
    rounds: Annotated[int | None, typer.Option(help="Synthesis rounds after fit; each asks every site for a fresh shard." + _d("rounds"))] = None,
    ipc: Annotated[int | None, typer.Option(help="Distilled images per class: what the release holds." + _d("ipc"))] = None,
    student_ipc: Annotated[int | None, typer.Option(help="Images per class the student trains on, chosen and relabelled as the distilled set is; the release holds ipc of them (0: every pool image, up to what a site relabels; at or below ipc: the distilled set alone)." + _d("student_ipc"))] = None,
    samples_per_class: Annotated[int | None, typer.Option(help="Images per class each site generates per round." + _d("samples_per_class"))] = None,
    oversample: Annotated[float | None, typer.Option(help="Each site draws this many times the request and keeps what its in-distribution filter passes (1: no filtering, figures only)." + _d("oversample"))] = None,
    selection: Annotated[str | None, typer.Option(help="How the distilled images are chosen: spectral, kcenter, herding or random." + _d("selection"))] = None,
    relabel: Annotated[bool | None, typer.Option("--relabel/--no-relabel", help="Have every site's teacher relabel the distilled set (and the student's set), combined as relabel-combine says." + _d("relabel"))] = None,
    relabel_combine: Annotated[str | None, typer.Option(help="How the sites' soft labels are combined: 'support' (each class's probability from the sites in proportion to their members of it) or 'label-shift' (the posterior under the pooled members' class prior)." + _d("relabel_combine"))] = None,
    student_resample: Annotated[bool | None, typer.Option("--student-resample/--no-student-resample", help="Have the student resample every input to the generators' resolution and back, so that real images look as sharp to it as its synthetic training images." + _d("student_resample"))] = None,
    drawn_class_weight: Annotated[float | None, typer.Option(help="The share of the student's target that is the class each image was drawn for (one-hot), the rest the sites' soft labels (0: soft labels only)." + _d("drawn_class_weight"))] = None,
    holdout_fraction: Annotated[float | None, typer.Option(help="Share of each site's images held out of training for the audit: more gives the audit more power." + _d("holdout_fraction"))] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for runs." + _d("out"))] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for partitions, splits and training." + _d("seed"))] = None,
    image_size: Annotated[int | None, typer.Option(help=IMAGE_SIZE_HELP + _d("image_size"))] = None,
    generator_kind: Annotated[str | None, typer.Option(help="The generator every site trains: 'diffusion' (a UNet, DP-SGD under a DP budget) or 'dp-merf' (one Gaussian release of class mean embeddings and a decoder fitted to it, in minutes; under DP its samples were recognised more often at 3 of 4 BloodMNIST sites: docs/audit.md)." + _d("generator_kind"))] = None,
    generator_steps: Annotated[int | None, typer.Option(help="Generator training steps per site (a dp-merf generator's decoder steps)." + _d("generator_steps"))] = None,
    generator_guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale the sites sample with: higher draws images their teacher recognises more often, at twice the sampling cost (1: none)." + _d("generator_guidance"))] = None,
    generator_teacher_guidance: Annotated[float | None, typer.Option(help="Guidance by each site's own teacher when its generator samples, towards the class each image is drawn for (0: off; at most 10). Sampling only: under DP of both models it spends no epsilon; with dp-models 'generator' it is refused." + _d("generator_teacher_guidance"))] = None,
    teacher_epochs: Annotated[int | None, typer.Option(help="Teacher training epochs." + _d("teacher_epochs"))] = None,
    teacher_resample: Annotated[bool | None, typer.Option("--teacher-resample/--no-teacher-resample", help="Have every site's teacher resample its inputs to the site's generator resolution and back, so that it learns the members at the detail of the synthetic images it labels." + _d("teacher_resample"))] = None,
    student_epochs: Annotated[int | None, typer.Option(help="Student training epochs on its set (see student-ipc)." + _d("student_epochs"))] = None,
    temperature: Annotated[float | None, typer.Option(help="Soft-label temperature." + _d("temperature"))] = None,
    audit_max_auc: Annotated[float | None, typer.Option(help="Release only if, at every site, every attack on the student has an AUC upper 95% bound at most this." + _d("audit_max_auc"))] = None,
    audit_max_tpr: Annotated[float | None, typer.Option(help="Release only if no attack on the student is shown (lower 95% bound) to catch more than this share of members at 1% FPR." + _d("audit_max_tpr"))] = None,
    audit_max_distance_auc: Annotated[float | None, typer.Option(help="Release only if the distance tests' AUC upper 95% bound is at most this." + _d("audit_max_distance_auc"))] = None,
    audit_max_generator_auc: Annotated[float | None, typer.Option(help="Release only if, at every site, the white-box attack on the site's own generator has an AUC upper 95% bound at most this." + _d("audit_max_generator_auc"))] = None,
    audit_min_utility: Annotated[float | None, typer.Option(help="Release only if the student keeps at least this share of what the sites' own teachers know: chance-adjusted balanced accuracy on the sites' holdouts, pooled (0: no utility rule)." + _d("audit_min_utility"))] = None,
    audit_min_adjusted_balanced_accuracy: Annotated[float | None, typer.Option(help="Release only if the student's own chance-adjusted balanced accuracy on the sites' holdouts, pooled, can reach this floor (upper end of its 95% interval; 0: chance, 1: perfect; 0 turns the floor off)." + _d("audit_min_adjusted_balanced_accuracy"))] = None,
    reference_models: Annotated[int | None, typer.Option(help="Reference models each site trains for RMIA (and LiRA), 2 to 8." + _d("audit_reference_models"))] = None,
    lira: Annotated[bool | None, typer.Option("--lira/--no-lira", help="Also run offline LiRA at every site (and require it to pass)." + _d("audit_lira"))] = None,
    dp_epsilon: Annotated[float | None, typer.Option(help="Train every site's models (those dp-models names) with DP-SGD within this total epsilon per site (0: no DP)." + _d("dp_epsilon"))] = None,
    dp_delta: Annotated[float | None, typer.Option(help="DP delta per site (0: 1/(10 N) for N members)." + _d("dp_delta"))] = None,
    dp_max_grad_norm: Annotated[float | None, typer.Option(help="DP-SGD per-example gradient clipping norm." + _d("dp_max_grad_norm"))] = None,
    dp_models: Annotated[str | None, typer.Option(help="Which models DP-SGD trains: 'teacher+generator' (the budget split between them) or 'generator' (all of it; the teacher trains without DP, so only the audit speaks for its soft labels)." + _d("dp_models"))] = None,
    hflip: Annotated[bool | None, typer.Option("--hflip/--no-hflip", help="Augment generators and teachers with horizontal flips: right for cells and skin, wrong for digits, text, chest X-rays and any classes that differ by side." + _d("generator_hflip"))] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP + _d("device"))] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Simulate N hospital sites on one dataset through Flower's simulation engine."""
    config = _config(profile, data=data, sites=sites, partition=partition, rounds=rounds, ipc=ipc, student_ipc=student_ipc,
                     samples_per_class=samples_per_class, oversample=oversample, selection=selection, relabel=relabel, relabel_combine=relabel_combine, student_resample=student_resample,
                     drawn_class_weight=drawn_class_weight, holdout_fraction=holdout_fraction, out=None if out is None else str(out), seed=seed,
                     image_size=image_size, generator_kind=generator_kind, generator_steps=generator_steps,
                     generator_guidance=generator_guidance, generator_teacher_guidance=generator_teacher_guidance,
                     teacher_epochs=teacher_epochs, teacher_resample=teacher_resample, student_epochs=student_epochs, temperature=temperature,
                     audit_max_auc=audit_max_auc, audit_max_tpr=audit_max_tpr,
                     audit_max_distance_auc=audit_max_distance_auc, audit_max_generator_auc=audit_max_generator_auc,
                     audit_min_utility=audit_min_utility, audit_min_adjusted_balanced_accuracy=audit_min_adjusted_balanced_accuracy,
                     audit_reference_models=reference_models,
                     audit_lira=lira, dp_epsilon=dp_epsilon, dp_delta=dp_delta, dp_max_grad_norm=dp_max_grad_norm, dp_models=dp_models,
                     generator_hflip=hflip, classifier_hflip=hflip, device=device)
    _run(config, verbose=verbose)


@app.command("config")
def show_config(
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "default",
) -> None:
    """Print a profile's effective settings, as `--run-config` keys; '*' marks what the profile overrides."""
    if profile not in PROFILES:
        fail(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    chosen = PROFILES[profile]
    described = chosen.describe()
    overridden = {k.replace("_", "-") for k in described["overrides"]}
    out_console.print(f"# profile {chosen.name}: {chosen.description}")
    for key, value in described["run"].items():
        text = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        out_console.print(f"{key} = {text}{'  # *' if key in overridden else ''}")
    out_console.print("# bench only")
    for key, value in described["bench"].items():
        dashed = key.replace("_", "-")
        out_console.print(f"{dashed} = {value}{'  # *' if dashed in overridden else ''}")


@app.command()
def inspect(release_dir: Annotated[Path, typer.Argument(help="A release folder, runs/<run-id>/release.")]) -> None:
    """Show a release's classes, IPC, accuracy and audit verdict, and check every file's hash."""
    from fedkr.shared.release_inspect import inspect_release

    try:
        result = inspect_release(release_dir)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    out_console.print(f"release {result.release_dir}")
    out_console.print(f"  classes ({len(result.classes)}): {', '.join(result.classes)}")
    out_console.print(f"  IPC (images per class): {result.ipc if result.ipc is not None else 'unknown'}")
    if result.per_class:
        out_console.print(f"  images per class: {', '.join(f'{k}={v}' for k, v in result.per_class.items())}")
    acc = result.student_accuracy
    out_console.print(f"  student test accuracy: {acc:.4f}" if acc is not None else "  student test accuracy: not measured")
    verdict = {True: "PASSED", False: "FAILED", None: "unknown"}[result.audit_passed]
    out_console.print(f"  audit: {verdict}")
    for sid, attacks in result.audit_sites.items():
        for name, r in attacks.items():
            if isinstance(r, dict) and "auc" in r:
                out_console.print(f"    {sid} {name}: AUC {r['auc']:.3f}, TPR@1%FPR {r['tpr_at_1pct_fpr']:.3f} ({r['num_members']} v {r['num_nonmembers']})")
    table = Table("file", "sha256 check")
    for name, status in result.file_checks.items():
        table.add_row(name, Text(status, style="green" if status == "OK" else ""))
    out_console.print(table)
    if not result.all_ok:
        fail("some files do not match the manifest", 1)


@app.command()
def audit(
    release_dir: Annotated[Path, typer.Argument(help="The release folder to audit.")],
    data: Annotated[str, typer.Option(help="This site's data: " + DATA_HELP)],
    site_name: Annotated[str, typer.Option(help="This site's name, as it appears in the report.")] = "site",
    out: Annotated[Path | None, typer.Option(help="Folder for audit.json and audit.html \\[default: ./audit-<release>-<site>].")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="The site's state folder: its teacher for the run gives the feature-space distance test.")] = None,
    seed: Annotated[int | None, typer.Option(help="The run's seed: it fixes the members/holdout split." + _d("seed"))] = None,
    holdout_fraction: Annotated[float | None, typer.Option(help="The run's holdout fraction." + _d("holdout_fraction"))] = None,
    image_size: Annotated[int | None, typer.Option(help="The run's working size, pixels." + _d("image_size"))] = None,
    partition: Annotated[str | None, typer.Option(help="Simulation only: the run's partition; leave out for a real site's own data, read whole.")] = None,
    sites: Annotated[int | None, typer.Option(help="Simulation only: the number of simulated sites." + _d("sites"))] = None,
    site_index: Annotated[int, typer.Option(help="Simulation only: which simulated site this is (0-based).")] = 0,
    reference_models: Annotated[int | None, typer.Option(help="Reference models for RMIA (and LiRA), 2 to 8." + _d("audit_reference_models"))] = None,
    lira: Annotated[bool | None, typer.Option("--lira/--no-lira", help="Also run offline LiRA." + _d("audit_lira"))] = None,
    max_auc: Annotated[float | None, typer.Option(help="Policy: AUC upper 95% bound of every attack on the student." + _d("audit_max_auc"))] = None,
    max_tpr: Annotated[float | None, typer.Option(help="Policy: lower 95% bound of TPR at 1% FPR of every attack on the student." + _d("audit_max_tpr"))] = None,
    max_distance_auc: Annotated[float | None, typer.Option(help="Policy: AUC upper 95% bound of the distance tests." + _d("audit_max_distance_auc"))] = None,
    max_generator_auc: Annotated[float | None, typer.Option(help="Policy: AUC upper 95% bound of the white-box attack on the site's generator (needs --state-dir holding the run's generator)." + _d("audit_max_generator_auc"))] = None,
    min_utility: Annotated[float | None, typer.Option(help="Policy: the share of the comparator's chance-adjusted balanced accuracy the student must keep (0: no utility rule)." + _d("audit_min_utility"))] = None,
    min_adjusted_balanced_accuracy: Annotated[float | None, typer.Option(help="Policy: the floor under the student's own chance-adjusted balanced accuracy, by the upper end of its interval (0: no floor)." + _d("audit_min_adjusted_balanced_accuracy"))] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP + _d("device"))] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show each attack as it finishes.")] = False,
) -> None:
    """Audit a release with this site's own data: every attack, the policy's verdict, audit.json and audit.html.

    Members and holdout are split exactly as in the run (same seed and holdout fraction), so the
    members are the images this site trained on. Exit code 0: passed; 3: the policy blocks it.
    """
    from fedkr.client.auditor import AuditSettings
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.shared.data import DataError
    from fedkr.shared.site_identity import KeyringError, check_site_name
    from fedkr.shared.device import resolve_device
    from fedkr.standalone_audit import ReleaseError, audit_release_dir

    setup_logging(verbose)
    try:
        check_site_name(site_name)  # it names the report's folder and the site in audit.json
    except KeyringError as exc:
        fail(str(exc))
    run = _config("default", seed=seed, holdout_fraction=holdout_fraction, sites=sites, audit_reference_models=reference_models,
                  audit_lira=lira, audit_max_auc=max_auc, audit_max_tpr=max_tpr, audit_max_distance_auc=max_distance_auc,
                  audit_max_generator_auc=max_generator_auc, audit_min_utility=min_utility,
                  audit_min_adjusted_balanced_accuracy=min_adjusted_balanced_accuracy, partition=partition, device=device, image_size=image_size)
    if partition is None and (sites is not None or site_index != 0):
        fail("--sites and --site-index describe a simulated run: give its --partition as well")
    try:
        # the split follows the run's seed; the attacks use the same fixed seed as the audit inside a run
        settings = AuditSettings(reference_models=run.audit_reference_models, lira=run.audit_lira)
        where = resolve_device(run.device)
        policy = run.audit_policy()
        if partition is None:
            spec = SiteDataSpec(data, seed=run.seed, holdout_fraction=run.holdout_fraction, image_size=run.image_size)
        else:
            if not 0 <= site_index < run.sites:
                raise ValueError(f"site-index must be in [0, {run.sites}), got {site_index}")
            spec = SiteDataSpec(data, site_index, run.sites, run.partition, run.seed, run.holdout_fraction, run.image_size)
        with console.status("loading the site's data"):
            site_data = load_site_data(spec)
        with console.status(f"attacking the release with {len(site_data.members)} members and {len(site_data.holdout)} holdout images"):
            decision, written = audit_release_dir(release_dir, site_name, site_data, out, settings, policy, state_dir, where)
    except (DataError, ReleaseError, ValueError) as exc:
        fail(str(exc))
    print_audit_sites(audit_summary_sites(decision))
    out_console.print(f"  report: {written / 'audit.html'} and {written / 'audit.json'}")
    if decision.passed:
        out_console.print("  verdict: [bold green]PASSED[/]", markup=True)
    else:
        out_console.print("  verdict: [bold red]BLOCKED[/]", markup=True)
        for reason in decision.reasons:
            out_console.print(f"    - {reason}")
        raise typer.Exit(3)


def audit_summary_sites(decision) -> dict:  # type: ignore[no-untyped-def]
    from fedkr.shared.audit_document import audit_summary

    return audit_summary(decision)["sites"]


@app.command()
def centralized(
    data: Annotated[str, typer.Option(help=DATA_HELP)],
    epochs: Annotated[int | None, typer.Option(help="Training epochs: the student's budget, for a fair bound." + _d("student_epochs"))] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and batching." + _d("seed"))] = None,
    hflip: Annotated[bool | None, typer.Option("--hflip/--no-hflip", help="Augment with horizontal flips, as the run's classifiers do." + _d("classifier_hflip"))] = None,
) -> None:
    """Train the student network on all real training images: the upper bound to compare a run with."""
    from fedkr.baselines import centralized_upper_bound
    from fedkr.shared.data import DataError, load_dataset

    setup_logging(False)
    run = _config("default", data=data, student_epochs=epochs, seed=seed, classifier_hflip=hflip)
    try:
        splits = load_dataset(run.data, seed=run.seed, image_size=run.image_size)
        with console.status(f"training on {len(splits.train)} real images for {run.student_epochs} epochs"):
            result = centralized_upper_bound(splits, run.teacher_config().__class__(
                epochs=run.student_epochs, seed=run.seed, hflip=run.classifier_hflip))
    except DataError as exc:
        fail(str(exc))
    out_console.print(f"centralized: test accuracy {result.test_accuracy:.4f} on {result.test_images} test images "
                      f"({result.train_images} training images, {result.epochs} epochs, {result.seconds:.0f} s)")


@app.command()
def bench(
    data: Annotated[str | None, typer.Option(help=DATA_HELP + " \\[default: the profile's]")] = None,
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "quick",
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md, bench.png and the fedkr runs.")] = Path("bench"),
    seeds: Annotated[int | None, typer.Option(help="Seeds per method \\[default: the profile's].")] = None,
    sites: Annotated[int | None, typer.Option(help="Simulated sites \\[default: the profile's].")] = None,
    partition: Annotated[str | None, typer.Option(help="'iid' or 'dirichlet:ALPHA' \\[default: the profile's].")] = None,
    generator_steps: Annotated[int | None, typer.Option(help="Diffusion training steps per site \\[default: the profile's].")] = None,
    ipc: Annotated[int | None, typer.Option(help="fedkr's distilled images per class \\[default: the profile's].")] = None,
    generator_guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance the sites sample with \\[default: the profile's].")] = None,
    generator_teacher_guidance: Annotated[float | None, typer.Option(help="Guidance by each site's own teacher when its generator samples (0: off) \\[default: the profile's].")] = None,
    drawn_class_weight: Annotated[float | None, typer.Option(help="fedkr's share of the student's target that is each image's drawn class (one-hot), in [0, 1] \\[default: the profile's].")] = None,
    relabel: Annotated[bool | None, typer.Option("--relabel/--no-relabel", help="Have every site's teacher relabel fedkr's student's set; off, no relabel reply is sent (nor attacked in the coordinator view) \\[default: the profile's].")] = None,
    relabel_combine: Annotated[str | None, typer.Option(help="How fedkr combines the sites' soft labels: 'support' or 'label-shift' \\[default: the profile's].")] = None,
    student_resample: Annotated[bool | None, typer.Option("--student-resample/--no-student-resample", help="Have fedkr's student (and the naive-pooling student, trained on the same synthetic images) resample every input to the generators' resolution and back \\[default: the profile's].")] = None,
    teacher_resample: Annotated[bool | None, typer.Option("--teacher-resample/--no-teacher-resample", help="Have every site's teacher resample its inputs to the site's generator resolution and back \\[default: the profile's].")] = None,
    reuse_fit: Annotated[Path | None, typer.Option(help="A finished `fedkr simulate` run folder (runs/<id>), or a `fedkr bench` "
                                                   "one (OUT/runs/bench-seed0), on the same data, partition and budgets, "
                                                   "whose sites' models to reuse instead of fitting.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted bench in OUT, given with the options "
                                         "it was started with: its finished seeds are kept, the others run.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every stage's log.")] = False,
) -> None:
    """Compare centralized, local-only, Flower FedAvg, naive synthetic pooling and fedkr on the same sites."""
    from fedkr.bench import ReusedFit, markdown_table, run_bench, write_outputs
    from fedkr.bench_progress import PROGRESS_FILE
    from fedkr.shared.config import ConfigError
    from fedkr.shared.data import DataError

    setup_logging(verbose)
    config = _config(profile, data=data, sites=sites, partition=partition, generator_steps=generator_steps, ipc=ipc,
                     generator_guidance=generator_guidance, generator_teacher_guidance=generator_teacher_guidance,
                     drawn_class_weight=drawn_class_weight, relabel=relabel,
                     relabel_combine=relabel_combine, student_resample=student_resample, teacher_resample=teacher_resample)
    try:
        settings = PROFILES[profile].bench_settings(seeds=seeds)
    except (TypeError, ValueError) as exc:
        fail(str(exc))
    if settings.seeds < 1 or config.sites < 2:
        fail("a bench needs at least 1 seed and 2 sites")
    progress_file = out / PROGRESS_FILE
    if not resume and progress_file.is_file():
        fail(f"{out} holds an interrupted bench: add --resume (with the options it was started with) to continue it, "
             "or give another --out")
    if not resume and out.exists() and any(out.iterdir()):
        fail(f"{out} is not empty: a bench writes into a fresh folder (its sites' state lives there)")
    started = time.perf_counter()

    def progress(message: str) -> None:
        console.print(f"[{time.perf_counter() - started:6.0f} s] {message}")

    try:
        result = run_bench(config, settings, out, progress, ReusedFit(reuse_fit) if reuse_fit else None, profile=profile,
                           resume=resume)
    except (ConfigError, DataError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"interrupted; the finished seeds are kept in {progress_file}: add --resume to continue", code=130)
    paths = write_outputs(result, out)
    progress_file.unlink(missing_ok=True)  # finished: bench.json holds every figure now
    out_console.print(markdown_table(result.to_dict()))
    out_console.print(f"written: {paths['json']}, {paths['markdown']}, {paths['plot']} ({result.seconds:.0f} s)")


# Command groups kept in their own modules register themselves here.
from fedkr import cli_deploy, cli_release  # noqa: E402

cli_deploy.register(app, coordinator_app, site_app)
cli_release.register(app, coordinator_app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
