"""The `fedkr` command: run the demo or a simulation, and inspect a release."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fedkr: hospitals share soft-labelled synthetic images, never patients' images.")
coordinator_app = typer.Typer(no_args_is_help=True, help="The coordinator's keys, site registry and release service.")
site_app = typer.Typer(no_args_is_help=True, help="A site's keys and its ledger of everything that left the hospital.")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(site_app, name="site")
console = Console(stderr=True)
out_console = Console()


def _setup_logging(verbose: bool) -> None:
    """fedkr's own progress at INFO; other libraries only when they warn, unless --verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", datefmt="%H:%M:%S",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)
    logging.getLogger("fedkr").setLevel(logging.INFO)
    flwr_log = logging.getLogger("flwr")
    if not verbose:
        flwr_log.propagate = False  # Flower prints through its own handler; keep its DEBUG lines out of ours
        flwr_log.addFilter(lambda record: "deprecated" not in str(record.msg) and record.levelno >= logging.INFO)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def _run(config_kwargs: dict, sites: int, verbose: bool) -> None:
    from fedkr.server.config import ConfigError, RunConfig
    from fedkr.server.coordinator import RunError
    from fedkr.shared.data import DataError, load_dataset
    from fedkr.simulation import check_partition, run_flower_simulation

    _setup_logging(verbose)
    try:
        config = RunConfig(**config_kwargs)
        splits = load_dataset(config.data, seed=config.seed)
        check_partition(splits, sites, config)
    except (ConfigError, DataError) as exc:
        _fail(str(exc))
    started = time.perf_counter()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("starting Flower simulation", total=config.rounds + 4)

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=total)

        try:
            outcome = run_flower_simulation(config, sites, on_progress, verbose, splits)
        except (DataError, ConfigError) as exc:
            _fail(str(exc))
        except RunError as exc:
            _fail(f"run failed: {exc}", 1)
    elapsed = time.perf_counter() - started
    m = outcome.metrics
    acc = m.get("student_test_accuracy")
    out_console.print(f"run {config.run_id} finished in {elapsed:.0f} s")
    out_console.print(f"  student test accuracy: {acc:.4f} on {m.get('test_images')} real test images" if acc is not None else "  no test split: accuracy not measured")
    _print_audit_sites(m["audit"]["sites"])
    if outcome.released:
        out_console.print(f"  release:  {outcome.release_dir}")
        out_console.print(f"  audit:    {outcome.release_dir / 'audit.html'}")
        out_console.print(f"  metrics:  {outcome.release_dir / 'metrics.json'}")
        out_console.print(f"  check it: fedkr inspect {outcome.release_dir}")
    else:
        out_console.print("  [bold red]release refused[/]:")
        for reason in m["audit"]["failures"]:
            out_console.print(f"    - {reason}", highlight=False, markup=False)
        out_console.print(f"  refusal:  {outcome.refusal_path}")
        out_console.print(f"  audit:    {outcome.run_dir / 'audit.html'}")
        raise typer.Exit(3)


def _print_audit_sites(sites: dict[str, dict]) -> None:
    """One table row per site and attack: AUC with its interval, TPR at 1% FPR, and the control run's AUC."""
    table = Table("site", "attack", "AUC [95% CI]", "TPR@1%FPR", "control AUC", "eps lower bound", "members v holdout")
    for sid, attacks in sites.items():
        if "error" in attacks:
            table.add_row(sid, "-", f"no audit: {attacks['error']}", "", "", "", "")
            continue
        for name, r in attacks.items():
            if not (isinstance(r, dict) and "auc" in r):
                continue
            ci = r.get("auc_ci") or [float("nan")] * 2
            control = r.get("control_auc")
            table.add_row(sid, name, f"{r['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]", f"{r['tpr_at_1pct_fpr']:.3f}",
                          "n/a" if control is None else f"{control:.3f}", f"{r.get('epsilon_lower_bound', 0.0):.2f}",
                          f"{r['num_members']} v {r['num_nonmembers']}")
        if isinstance(attacks.get("dp"), dict):
            table.add_row(sid, "DP-SGD", f"epsilon {attacks['dp'].get('epsilon', float('nan')):.2f}", "", "", "", "")
    out_console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for runs.")] = Path("runs"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Three simulated sites on scikit-learn's bundled digits: the whole pipeline in a few minutes."""
    _run(dict(data="digits", partition="iid", rounds=2, ipc=20, samples_per_class=40, generator_steps=600,
              generator_hflip=False, teacher_epochs=30, student_epochs=60, out=str(out)), sites=3, verbose=verbose)


@app.command()
def simulate(
    data: Annotated[str, typer.Option(help="'digits', a MedMNIST .npz file, or an image folder (one subfolder per class).")],
    sites: Annotated[int, typer.Option(help="Number of simulated hospital sites.")] = 4,
    partition: Annotated[str, typer.Option(help="'iid' or 'dirichlet:ALPHA' label skew across sites.")] = "dirichlet:0.5",
    rounds: Annotated[int, typer.Option(help="Synthesis rounds after fit; each asks every site for a fresh shard.")] = 3,
    ipc: Annotated[int, typer.Option(help="Distilled images per class.")] = 50,
    samples_per_class: Annotated[int, typer.Option(help="Images per class each site generates per round.")] = 50,
    oversample: Annotated[float, typer.Option(help="Each site draws this many times the request and keeps what its in-distribution filter passes (1: no filtering, figures only).")] = 1.0,
    selection: Annotated[str, typer.Option(help="How the distilled images are chosen: spectral, kcenter, herding or random.")] = "spectral",
    relabel: Annotated[bool, typer.Option(help="Have every site's teacher relabel the distilled set, weighted by class support.")] = True,
    holdout_fraction: Annotated[float, typer.Option(help="Share of each site's images held out of training for the audit: more gives the audit more power.")] = 0.2,
    out: Annotated[Path, typer.Option(help="Folder for runs.")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Seed for partitions, splits and training.")] = 0,
    generator_steps: Annotated[int, typer.Option(help="Diffusion training steps per site.")] = 1500,
    generator_guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale the sites sample with: higher draws images their teacher recognises more often, at twice the sampling cost (1: none).")] = 1.0,
    teacher_epochs: Annotated[int, typer.Option(help="Teacher training epochs.")] = 30,
    student_epochs: Annotated[int, typer.Option(help="Student training epochs on the distilled set.")] = 60,
    temperature: Annotated[float, typer.Option(help="Soft-label temperature.")] = 4.0,
    audit_max_auc: Annotated[float, typer.Option(help="Release only if, at every site, every attack on the student has an AUC upper 95% bound at most this.")] = 0.6,
    audit_max_tpr: Annotated[float, typer.Option(help="Release only if no attack on the student is shown (lower 95% bound) to catch more than this share of members at 1% FPR.")] = 0.03,
    audit_max_distance_auc: Annotated[float, typer.Option(help="Release only if the distance tests' AUC upper 95% bound is at most this.")] = 0.6,
    reference_models: Annotated[int, typer.Option(help="Reference models each site trains for RMIA (and LiRA), 2 to 8.")] = 2,
    lira: Annotated[bool, typer.Option(help="Also run offline LiRA at every site (and require it to pass).")] = False,
    dp_epsilon: Annotated[float, typer.Option(help="Train every site's teacher and generator with DP-SGD within this total epsilon per site (0: no DP).")] = 0.0,
    dp_delta: Annotated[float, typer.Option(help="DP delta per site (0: 1/(10 N) for N members).")] = 0.0,
    dp_max_grad_norm: Annotated[float, typer.Option(help="DP-SGD per-example gradient clipping norm.")] = 1.0,
    hflip: Annotated[bool, typer.Option(help="Augment with horizontal flips: right for cells and skin, wrong for digits, text or chest X-rays.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Simulate N hospital sites on one dataset through Flower's simulation engine."""
    _run(dict(data=data, partition=partition, rounds=rounds, ipc=ipc, samples_per_class=samples_per_class,
              oversample=oversample, selection=selection, relabel=relabel, holdout_fraction=holdout_fraction,
              out=str(out), seed=seed, generator_steps=generator_steps, generator_guidance=generator_guidance,
              teacher_epochs=teacher_epochs,
              student_epochs=student_epochs, temperature=temperature, audit_max_auc=audit_max_auc,
              audit_max_tpr=audit_max_tpr, audit_max_distance_auc=audit_max_distance_auc,
              audit_reference_models=reference_models, audit_lira=lira,
              dp_epsilon=dp_epsilon, dp_delta=dp_delta, dp_max_grad_norm=dp_max_grad_norm,
              generator_hflip=hflip, classifier_hflip=hflip), sites=sites, verbose=verbose)


@app.command()
def inspect(release_dir: Annotated[Path, typer.Argument(help="A release folder, runs/<run-id>/release.")]) -> None:
    """Show a release's classes, IPC, accuracy and audit verdict, and check every file's hash."""
    from fedkr.server.release import inspect_release

    try:
        result = inspect_release(release_dir)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
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
        table.add_row(name, status if status != "OK" else "[green]OK[/]")
    out_console.print(table)
    if not result.all_ok:
        _fail("some files do not match the manifest", 1)


@app.command()
def audit(
    release_dir: Annotated[Path, typer.Argument(help="The release folder to audit.")],
    data: Annotated[str, typer.Option(help="This site's data: a MedMNIST .npz file, an image folder, or 'digits'.")],
    site_name: Annotated[str, typer.Option(help="This site's name, as it appears in the report.")] = "site",
    out: Annotated[Path | None, typer.Option(help="Folder for audit.json and audit.html [default: ./audit-<release>-<site>].")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="The site's state folder: its teacher for the run gives the feature-space distance test.")] = None,
    seed: Annotated[int, typer.Option(help="The run's seed: it fixes the members/holdout split.")] = 0,
    holdout_fraction: Annotated[float, typer.Option(help="The run's holdout fraction.")] = 0.2,
    sites: Annotated[int, typer.Option(help="Simulation only: the number of simulated sites.")] = 1,
    site_index: Annotated[int, typer.Option(help="Simulation only: which simulated site this is (0-based).")] = 0,
    partition: Annotated[str, typer.Option(help="Simulation only: the run's partition ('none' for a real site's own data).")] = "none",
    reference_models: Annotated[int, typer.Option(help="Reference models for RMIA (and LiRA), 2 to 8.")] = 2,
    lira: Annotated[bool, typer.Option(help="Also run offline LiRA.")] = False,
    max_auc: Annotated[float, typer.Option(help="Policy: AUC upper 95% bound of every attack on the student.")] = 0.6,
    max_tpr: Annotated[float, typer.Option(help="Policy: lower 95% bound of TPR at 1% FPR of every attack on the student.")] = 0.03,
    max_distance_auc: Annotated[float, typer.Option(help="Policy: AUC upper 95% bound of the distance tests.")] = 0.6,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show each attack as it finishes.")] = False,
) -> None:
    """Audit a release with this site's own data: every attack, the policy's verdict, audit.json and audit.html.

    Members and holdout are split exactly as in the run (same seed and holdout fraction), so the
    members are the images this site trained on. Exit code 0: passed; 3: the policy blocks it.
    """
    from fedkr.client.auditor import AuditSettings
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.shared.audit_policy import DISTANCE_ATTACKS, STUDENT_ATTACKS, AuditPolicy
    from fedkr.shared.data import DataError
    from fedkr.standalone_audit import ReleaseError, audit_release_dir

    _setup_logging(verbose)
    try:
        # the split follows the run's seed; the attacks use the same fixed seed as the audit inside a run
        settings = AuditSettings(reference_models=reference_models, lira=lira)
        policy = AuditPolicy(max_auc_upper=max_auc, max_tpr_at_1pct_fpr=max_tpr, max_distance_auc_upper=max_distance_auc,
                             required_attacks=STUDENT_ATTACKS + (("lira",) if lira else ()) + DISTANCE_ATTACKS)
        if not 0 <= site_index < sites:
            raise ValueError(f"site-index must be in [0, {sites}), got {site_index}")
        spec = SiteDataSpec(data, site_index, sites, partition, seed, holdout_fraction)
        with console.status("loading the site's data"):
            site_data = load_site_data(spec)
        with console.status(f"attacking the release with {len(site_data.members)} members and {len(site_data.holdout)} holdout images"):
            decision, written = audit_release_dir(release_dir, site_name, site_data, out, settings, policy, state_dir)
    except (DataError, ReleaseError, ValueError) as exc:
        _fail(str(exc))
    _print_audit_sites(audit_summary_sites(decision))
    out_console.print(f"  report: {written / 'audit.html'} and {written / 'audit.json'}")
    if decision.passed:
        out_console.print("  verdict: [bold green]PASSED[/]")
    else:
        out_console.print("  verdict: [bold red]BLOCKED[/]")
        for reason in decision.reasons:
            out_console.print(f"    - {reason}", highlight=False, markup=False)
        raise typer.Exit(3)


def audit_summary_sites(decision) -> dict:  # type: ignore[no-untyped-def]
    from fedkr.server.audit_document import audit_summary

    return audit_summary(decision)["sites"]


@app.command()
def centralized(
    data: Annotated[str, typer.Option(help="'digits', a MedMNIST .npz file, or an image folder.")],
    epochs: Annotated[int, typer.Option(help="Training epochs (use the student's epoch budget for a fair bound).")] = 60,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and batching.")] = 0,
    hflip: Annotated[bool, typer.Option(help="Augment with horizontal flips, as simulate does by default.")] = True,
) -> None:
    """Train the student network on all real training images: the upper bound to compare a run with."""
    from fedkr.baselines import centralized_upper_bound
    from fedkr.shared.classifier import TrainConfig
    from fedkr.shared.data import DataError, load_dataset

    _setup_logging(False)
    if epochs < 1:
        _fail("epochs must be at least 1")
    try:
        splits = load_dataset(data, seed=seed)
        with console.status(f"training on {len(splits.train)} real images for {epochs} epochs"):
            result = centralized_upper_bound(splits, TrainConfig(epochs=epochs, seed=seed, hflip=hflip))
    except DataError as exc:
        _fail(str(exc))
    out_console.print(f"centralized: test accuracy {result.test_accuracy:.4f} on {result.test_images} test images "
                      f"({result.train_images} training images, {result.epochs} epochs, {result.seconds:.0f} s)")


@app.command()
def bench(
    data: Annotated[str, typer.Option(help="'digits', a MedMNIST .npz file, or an image folder.")] = "digits",
    profile: Annotated[str, typer.Option(help="'quick' (digits-sized, about a minute) or 'full' (real datasets).")] = "quick",
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md, bench.png and the fedkr runs.")] = Path("bench"),
    seeds: Annotated[int | None, typer.Option(help="Seeds per method (default: the profile's).")] = None,
    sites: Annotated[int | None, typer.Option(help="Simulated sites (default: the profile's).")] = None,
    partition: Annotated[str | None, typer.Option(help="'iid' or 'dirichlet:ALPHA' (default: the profile's).")] = None,
    generator_steps: Annotated[int | None, typer.Option(help="Diffusion training steps per site (default: the profile's).")] = None,
    ipc: Annotated[int | None, typer.Option(help="fedkr's distilled images per class (default: the profile's).")] = None,
    generator_guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance the sites sample with (default: the profile's).")] = None,
    reuse_fit: Annotated[Path | None, typer.Option(help="A finished `fedkr simulate` run folder (runs/<id>) on the same data, "
                                                   "partition and budgets, whose sites' models to reuse instead of fitting.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every stage's log.")] = False,
) -> None:
    """Compare centralized, local-only, Flower FedAvg, naive synthetic pooling and fedkr on the same sites."""
    from fedkr.bench import PROFILES, ReusedFit, markdown_table, run_bench, with_overrides, write_outputs
    from fedkr.server.config import ConfigError
    from fedkr.shared.data import DataError

    _setup_logging(verbose)
    if profile not in PROFILES:
        _fail(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    chosen = with_overrides(PROFILES[profile], seeds=seeds, sites=sites, partition=partition,
                            generator_steps=generator_steps, ipc=ipc, generator_guidance=generator_guidance)
    if chosen.seeds < 1 or chosen.sites < 2:
        _fail("a bench needs at least 1 seed and 2 sites")
    if out.exists() and any(out.iterdir()):
        _fail(f"{out} is not empty: a bench writes into a fresh folder (its sites' state lives there)")
    started = time.perf_counter()

    def progress(message: str) -> None:
        console.print(f"[{time.perf_counter() - started:6.0f} s] {message}", highlight=False)

    try:
        result = run_bench(data, chosen, out, progress, ReusedFit(reuse_fit) if reuse_fit else None)
    except (ConfigError, DataError, ValueError) as exc:
        _fail(str(exc))
    paths = write_outputs(result, out)
    out_console.print(markdown_table(result.to_dict()))
    out_console.print(f"written: {paths['json']}, {paths['markdown']}, {paths['plot']} ({result.seconds:.0f} s)")


# Command groups kept in their own modules register themselves here.
from fedkr import cli_deploy  # noqa: E402

cli_deploy.register(app, coordinator_app, site_app)
from fedkr import cli_release  # noqa: E402
cli_release.register(app, coordinator_app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
