"""`fedkr bench`, quick profile on digits: every method's row is complete and fedkr keeps up with naive pooling."""

import json
import shutil
from dataclasses import replace

import pytest

from fedkr.bench import (METHODS, bench_run_config, fedavg_at_upload, fedavg_train_config, markdown_table, run_bench,
                         write_outputs)
from fedkr.bench_progress import PROGRESS_FILE
from fedkr.shared.config import PROFILES, ConfigError, RunConfig
from fedkr.student_protocol import StudentProtocol


def test_run_and_bench_train_the_student_by_the_same_protocol():
    config = RunConfig(student_epochs=17, temperature=3.0, seed=5)
    assert config.student_config() == StudentProtocol(epochs=17, temperature=3.0).train_config(5, soft=True)
    assert StudentProtocol().train_config(0, soft=False).temperature == 1.0


def test_fedavg_spreads_the_protocols_step_floor_over_its_rounds_and_takes_a_learning_rate():
    protocol = StudentProtocol(epochs=40)
    base = protocol.train_config(3, soft=False)
    assert base.min_steps == 600
    five = fedavg_train_config(protocol, 3, rounds=5)
    assert five == replace(base, min_steps=120)
    assert fedavg_train_config(protocol, 3, rounds=7).min_steps == 86  # 600 / 7 rounded up: never below the floor
    assert fedavg_train_config(protocol, 3, rounds=5, lr=4e-3) == replace(five, lr=4e-3)


@pytest.mark.flower
def test_quick_bench_rows_complete_and_fedkr_keeps_up_with_naive_pooling(tmp_path):
    profile = PROFILES["quick"]
    # two seeds, not the profile's three: the first fits the sites and attacks every method, the second
    # runs every stage after fit again on that fit, so both paths stay covered without a third seed's stages
    settings = profile.bench_settings(seeds=2)

    def cut_off_in_seed_1(message: str) -> None:  # as a kill would, once seed 1's fedkr run has sent its shards
        if message == "seed 1: naive pooling":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(profile.run_config(), settings, tmp_path, cut_off_in_seed_1, profile="quick")
    saved = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert saved["seeds_done"] == 1 and saved["rows"]["fedkr"]["accuracy"] and saved["fit"]["run_id"] == "bench-seed0"
    with pytest.raises(ConfigError, match="other settings"):
        run_bench(profile.run_config(student_epochs=3), settings, tmp_path, profile="quick", resume=True)
    # carried to another machine: the progress file and the runs' folders, not the sites' fit or ledgers
    shutil.rmtree(tmp_path / "sites")
    result = run_bench(profile.run_config(), settings, tmp_path, profile="quick", resume=True)
    for name in METHODS:
        assert result.rows[name].complete(settings.seeds), (name, result.rows[name])
        assert result.rows[name].accuracy[0] == saved["rows"][name]["accuracy"][0]  # seed 0 kept, not rerun
    # seed 1 ran again whole, its fedkr run under a run id that has no run folder yet
    assert [run["run_id"] for run in result.fedkr_runs] == ["bench-seed0", "bench-seed1-try2"]
    assert [entry["started_at_seed"] for entry in result.invocations] == [0, 1] and result.seconds > saved["seconds"]
    # the resumed bench fitted the sites again, and the seeded refit reproduced the first fit, weights and all
    assert result.invocations[1]["refit"] == {"run_id": "bench-refit", "reproduced": True,
                                              "compared": "reports and weights", "differences": []}
    refitted = json.loads((tmp_path / PROGRESS_FILE).read_text())["fit"]
    assert refitted["run_id"] == "bench-refit" and refitted["weights"] == saved["fit"]["weights"]
    assert len(saved["fit"]["weights"]) == len(saved["fit"]["reports"])
    # a finished bench resumed again (cut off between its last seed and its outputs) fits nothing and runs no seed
    again = run_bench(profile.run_config(), settings, tmp_path, profile="quick", resume=True)
    assert [row.accuracy for row in again.rows.values()] == [row.accuracy for row in result.rows.values()]
    assert "refit" not in again.invocations[2]
    data = result.to_dict()
    fedkr, naive = data["methods"]["fedkr"], data["methods"]["naive_pooling"]
    # at these budgets the two are within a test image or two of each other (fedkr 0.922, 0.925 against
    # 0.925, 0.925 of 359 images, on 61f8669 and after): fedkr must not fall below naive pooling by more
    # than one binomial standard error of the test split's accuracy
    from fedkr.shared.data import load_dataset

    config = profile.run_config()
    n_test = len(load_dataset(config.data, seed=config.seed).test)
    p = naive["accuracy_mean"]
    assert fedkr["accuracy_mean"] >= p - (p * (1 - p) / n_test) ** 0.5, (fedkr["accuracy"], naive["accuracy"])
    central = data["methods"]["centralized"]
    assert central["accuracy_mean"] >= data["methods"]["local_worst"]["accuracy_mean"]
    # what crossed: fedkr's sites uploaded synthetic shards (plus metrics), centralized the members' pixels
    assert 0 < naive["bytes_uploaded_per_site"] <= fedkr["bytes_uploaded_per_site"]
    assert data["methods"]["local_mean"]["bytes_uploaded_per_site"] == 0
    # the coordinator view: FedAvg's every upload; fedkr's shards, their soft labels and relabel replies;
    # naive pooling's shards and soft labels
    views = data["coordinator_view"]
    assert len({(e["site"], e["received"]) for e in views["fedavg"]}) == settings.fedavg_rounds * len(data["site_sizes"])
    assert {e["received"] for e in views["fedkr"]} == {"shards", "shard labels", "relabel reply"}
    assert {e["attack"] for e in views["naive_pooling"]} == {"dcr_pixel", "dcr_feature", "domias", "loss", "entropy",
                                                            "rmia"}
    assert {e["received"] for e in views["naive_pooling"]} == {"shards", "shard labels"}
    for name in ("fedavg", "fedkr", "naive_pooling"):
        top = data["methods"][name]["coordinator_view"]
        assert top["auc"] == max(e["auc"] for e in views[name]) and 0.0 <= top["tpr_at_01pct_fpr"] <= 1.0
    assert data["methods"]["centralized"]["coordinator_view"] == {"note": "receives the images"}
    assert data["methods"]["local_mean"]["coordinator_view"] == {"note": "receives nothing"}
    # FedAvg's accuracy against its upload, round by round, and where fedkr's upload falls on that curve
    fedavg = data["methods"]["fedavg"]
    assert len(fedavg["accuracy_by_round"]) == settings.seeds
    assert len(fedavg["accuracy_by_round_mean"]) == len(fedavg["upload_bytes_by_round"]) == settings.fedavg_rounds
    assert fedavg["upload_bytes_by_round"][-1] == fedavg["bytes_uploaded_per_site"]
    assert data["fedavg_at_fedkr_upload"] == fedavg_at_upload(fedavg, fedkr["bytes_uploaded_per_site"])
    paths = write_outputs(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["schema"] == "fedkr.bench/2"
    table = paths["markdown"].read_text()
    assert table == markdown_table(data) and table.count("\n| ") == len(METHODS)
    assert paths["plot"].stat().st_size > 10_000


def test_fedavg_at_upload_stops_at_the_last_round_within_the_budget():
    fedavg = {"accuracy_by_round_mean": [0.5, 0.7, 0.8], "upload_bytes_by_round": [100.0, 200.0, 300.0]}
    assert fedavg_at_upload(fedavg, 250.0) == {"round": 2, "upload_bytes": 200.0, "accuracy_mean": 0.7}
    assert fedavg_at_upload(fedavg, 300.0) == {"round": 3, "upload_bytes": 300.0, "accuracy_mean": 0.8}
    assert fedavg_at_upload(fedavg, 1e9)["round"] == 3
    assert fedavg_at_upload(fedavg, 99.0) == {"round": 0, "upload_bytes": 0.0, "accuracy_mean": None}
    assert fedavg_at_upload(fedavg, None) is None
    assert fedavg_at_upload({"accuracy_by_round_mean": [], "upload_bytes_by_round": []}, 250.0) is None
    table_input = {
        "profile": {"seeds": 1}, "fedkr_over_centralized": None, "fedavg_at_fedkr_upload": fedavg_at_upload(fedavg, 250.0),
        "methods": {"fedavg": {**fedavg, "accuracy_mean": 0.8, "accuracy_std": 0.0, "mia_auc": 0.5, "mia_attack": "loss",
                               "mia_site": "site-0", "mia_tpr_at_1pct_fpr": 0.0, "bytes_uploaded_per_site": 300.0,
                               "seconds_mean": 1.0},
                    "fedkr": {"accuracy_mean": 0.75, "accuracy_std": 0.0, "mia_auc": 0.5, "mia_attack": "loss",
                              "mia_site": "site-0", "mia_tpr_at_1pct_fpr": 0.0, "bytes_uploaded_per_site": 250.0,
                              "seconds_mean": 1.0}}}
    table = markdown_table(table_input)
    assert "round 1: 0.500 at 100 B; round 2: 0.700 at 200 B; round 3: 0.800 at 300 B" in table
    assert ("At fedkr's upload (250 B per site) FedAvg's run reaches round 2 (200 B): 0.700, against fedkr's 0.750 "
            "(that run's first rounds, local steps sized for 3 rounds).") in table
    whole = markdown_table({**table_input, "fedavg_at_fedkr_upload": fedavg_at_upload(fedavg, 1e9)})
    assert "fedkr's upload (250 B per site) covers FedAvg's whole run (3 rounds, 300 B): 0.800, against fedkr's 0.750." in whole


def test_reused_fit_reads_the_fit_of_a_finished_run(tmp_path):
    from fedkr.bench import ReusedFit
    from fedkr.shared.data import DataError
    from fedkr.shared.reports import FitReport

    report = FitReport("site-0", 10, 3, ("a", "b"), (8, 8, 1), (6, 4), 0.9, 0.1, 2.0, 30.0)
    run = tmp_path / "runs" / "r1"
    (run / "release").mkdir(parents=True)
    (run / "release" / "metrics.json").write_text(json.dumps(
        {"run_id": "r1", "sites": {"site-0": report.to_dict()}, "stage_seconds": {"fit": 41.5}}))
    sites_dir, run_id, reports, fit_seconds = ReusedFit(run).load()
    assert (sites_dir, run_id, fit_seconds) == (tmp_path / "runs" / "sites", "r1", 41.5)
    assert reports == {"site-0": report}
    # a bench's output: OUT/runs/<id> beside OUT/sites
    (tmp_path / "sites").mkdir()
    assert ReusedFit(run).load()[0] == tmp_path / "sites"
    (tmp_path / "runs" / "sites").mkdir()  # simulate's layout, OUT/<id> beside OUT/sites, comes first
    assert ReusedFit(run).load()[0] == tmp_path / "runs" / "sites"
    with pytest.raises(DataError, match="no metrics.json"):
        ReusedFit(tmp_path / "nothing").load()
    (run / "release" / "metrics.json").write_text(json.dumps(
        {"run_id": "../r1", "sites": {"site-0": report.to_dict()}, "stage_seconds": {"fit": 41.5}}))
    with pytest.raises(DataError, match="invalid run id '../r1'"):
        ReusedFit(run).load()
    broken = {key: value for key, value in report.to_dict().items() if key != "num_members"}
    for site in (broken, report.to_dict() | {"image_shape": "8x8"}, report.to_dict() | {"num_members": float("inf")}):
        (run / "release" / "metrics.json").write_text(json.dumps(
            {"run_id": "r1", "sites": {"site-0": site}, "stage_seconds": {"fit": 41.5}}))
        with pytest.raises(DataError, match="a site's fit report is malformed"):
            ReusedFit(run).load()


def test_a_reused_generator_must_match_the_profile(tmp_path):
    from fedkr.bench import check_generator
    from fedkr.shared.data import DataError

    config = PROFILES["quick"].run_config()
    meta = {"config": {"hflip": config.generator_hflip, "guidance_scale": 1.0}, "trained_steps": config.generator_steps}
    (tmp_path / "generator.json").write_text(json.dumps(meta))
    check_generator(tmp_path, config)
    (tmp_path / "generator.json").write_text(json.dumps({**meta, "trained_steps": config.generator_steps + 1}))
    with pytest.raises(DataError, match="profile asks for"):
        check_generator(tmp_path, config)


def test_generator_guidance_reaches_the_sites_generator_and_is_checked():
    from fedkr.shared.config import ConfigError

    assert RunConfig.from_flat({"generator-guidance": "3"}).generator_config().guidance_scale == 3.0
    with pytest.raises(ConfigError, match="generator-guidance"):
        RunConfig(generator_guidance=0.5)


def test_a_reused_fit_with_other_training_settings_is_refused(tmp_path):
    from fedkr.bench import ReusedFit
    from fedkr.shared.data import DataError

    expected = bench_run_config(PROFILES["quick"].run_config(), tmp_path, seed=0)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    config = {key: getattr(expected, key) for key in ReusedFit.MUST_MATCH} | {"data": "digits",
                                                                             "classifier_hflip": expected.classifier_hflip}
    metrics = {"run_id": "r1", "sites": {}, "stage_seconds": {"fit": 1.0}, "config": config}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert ReusedFit(run).load(expected)[1] == "r1"
    (run / "metrics.json").write_text(json.dumps({**metrics, "config": {**config, "generator_steps": 9, "data": "x.npz"}}))
    with pytest.raises(DataError, match=r"data='x.npz'.*generator_steps=9 \(bench: 60\)"):
        ReusedFit(run).load(expected)
    # a run made before a setting existed had its default: it matches a bench at the default, and no other
    older = {k: v for k, v in config.items() if k != "generator_noise_multiplicity"}
    (run / "metrics.json").write_text(json.dumps({**metrics, "config": older}))
    assert ReusedFit(run).load(expected)[1] == "r1"
    with pytest.raises(DataError, match=r"generator_noise_multiplicity=1 \(bench: 4\)"):
        ReusedFit(run).load(replace(expected, generator_noise_multiplicity=4))


def test_a_reused_fit_s_summary_names_the_sampling_settings_the_bench_samples_at():
    from fedkr.bench import sampled_summary

    fitted = {"generator_steps": 60, "guidance_scale": 3.0, "sample_eta": 0.0, "classifier_guidance": 1.0}
    plain = sampled_summary(fitted, PROFILES["quick"].run_config(generator_guidance=2.0))
    assert plain == {"generator_steps": 60, "guidance_scale": 2.0, "sample_eta": 0.0}, "the fit's teacher guidance is not the bench's"
    guided = sampled_summary(fitted, PROFILES["quick"].run_config(generator_teacher_guidance=0.3))
    assert guided["classifier_guidance"] == 0.3 and guided["guidance_scale"] == PROFILES["quick"].run_config().generator_guidance


def test_a_reused_fit_samples_at_the_sampling_settings_it_is_given_and_keeps_the_weights(tmp_path):
    from fedkr.client.site import Site
    from fedkr.client.site_data import SiteDataSpec, load_site_data
    from fedkr.shared.classifier import ClassifierConfig, build_classifier
    from fedkr.shared.generator import ClassConditionalDiffusion, GeneratorConfig
    from safetensors.torch import save_file

    data = load_site_data(SiteDataSpec("digits"))
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    h, w, c = data.members.image_shape
    teacher = build_classifier(ClassifierConfig(c, h, w, data.members.num_classes, 8), seed=0)
    save_file(teacher.state_dict(), fit_dir / "teacher.safetensors")
    (fit_dir / "teacher.json").write_text(json.dumps(teacher.config.to_dict()))
    generator = ClassConditionalDiffusion(GeneratorConfig(block_channels=(8, 16), guidance_scale=3.0), 10, (h, w, c))
    generator.save(fit_dir / "generator")
    site = Site("site-0", data, tmp_path / "site-0")
    site.reuse_fit(fit_dir, "asis")
    site.reuse_fit(fit_dir, "other", guidance_scale=1.5, sample_eta=0.5)
    assert (site._load("asis")[1].config.guidance_scale, site._load("asis")[1].config.sample_eta) == (3.0, 0.0)
    other = site._load("other")[1]
    assert (other.config.guidance_scale, other.config.sample_eta) == (1.5, 0.5)
    assert other.config.block_channels == (8, 16) and other.summary()["sample_eta"] == 0.5


def test_bench_progress_reads_back_and_refuses_other_settings_or_a_damaged_file(tmp_path):
    from fedkr.bench_progress import BenchProgress, progress_key

    profile = PROFILES["quick"]
    key = progress_key(profile.run_config(), profile.bench_settings(seeds=2), "quick", None)
    state = BenchProgress(key, seeds_done=1, rows={"fedkr": {"method": "fedkr", "accuracy": [0.9]}}, seconds=12.5)
    state.begin()
    state.save(tmp_path)
    assert BenchProgress.load(tmp_path, key) == state
    other = progress_key(profile.run_config(student_epochs=3), profile.bench_settings(seeds=2), "quick", None)
    with pytest.raises(ConfigError, match=r"other settings \(student-epochs: 15 there, 3 now\)"):
        BenchProgress.load(tmp_path, other)
    path = tmp_path / PROGRESS_FILE
    for damage in ({"seeds_done": "one"}, {"seeds_done": 3}, {"seconds": -1}, {"views": {"fedkr": [1]}}, {"extra": 1}):
        path.write_text(json.dumps({**json.loads(json.dumps({"schema": "fedkr.bench-progress/1", **state.__dict__})),
                                    **damage}))
        with pytest.raises(ConfigError):
            BenchProgress.load(tmp_path, key)


def test_compare_fits_names_what_a_refit_changed_and_ignores_its_timings():
    from fedkr.bench_progress import compare_fits

    report = {"teacher_holdout_accuracy": 0.9, "generator_final_loss": 0.07, "teacher_seconds": 10.0,
              "generator_seconds": 20.0}
    saved = {"reports": {"site-0": report, "site-1": report}, "weights": {"site-0": "ab", "site-1": "cd"}}
    slower = {"reports": {"site-0": {**report, "teacher_seconds": 99.0}, "site-1": report},
              "weights": {"site-0": "ab", "site-1": "cd"}}
    same = compare_fits(saved, slower)
    assert same.reproduced and same.differences == [] and same.compared == "reports and weights"
    other = {"reports": {"site-0": report, "site-1": {**report, "generator_final_loss": 0.08}},
             "weights": {"site-0": "ab", "site-1": "ef"}}
    changed = compare_fits(saved, other)
    assert not changed.reproduced
    assert changed.differences == ["site-1: generator_final_loss 0.07 there, 0.08 now", "site-1: weights cd there, ef now"]
    assert compare_fits(saved, {"reports": {"site-0": report}}).differences[0].startswith("sites fitted: ['site-0', 'site-1']")
    # a fit saved before weights were recorded is compared by its reports alone, and says so
    by_reports = compare_fits({"reports": saved["reports"]}, other)
    assert by_reports.differences == ["site-1: generator_final_loss 0.07 there, 0.08 now"]
    assert by_reports.compared == "reports"