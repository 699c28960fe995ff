"""The audit report renderer: one self-contained, escaped HTML page from an audit document."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from fedkr.shared.audit_html import render_audit_html

CLASSES = ["class a", "class b", "class c"]
EVIL_SITE = "site-<b>x</b>"
STUDENT_ATTACKS = [("loss", "Yeom et al.: lower loss means member"), ("entropy", "lower entropy means member"),
                   ("rmia", "relative membership inference")]
DISTANCE_ATTACKS = [("dcr_pixel", "distance to the closest distilled image, pixels"),
                    ("dcr_feature", "distance to the closest distilled image, features")]


def _roc(rng, members, nonmembers, shift):
    m = rng.normal(shift, 1.0, members)
    n = rng.normal(0.0, 1.0, nonmembers)
    thresholds = np.unique(np.concatenate([m, n]))[::-1]
    tpr = [(m >= t).mean() for t in thresholds]
    fpr = [(n >= t).mean() for t in thresholds]
    edges = np.linspace(min(m.min(), n.min()), max(m.max(), n.max()), 31)
    return ({"fpr": [0.0, *fpr], "tpr": [0.0, *tpr]},
            {"edges": edges.tolist(), "members": np.histogram(m, edges)[0].tolist(),
             "nonmembers": np.histogram(n, edges)[0].tolist()})


def make_attack(rng, name, description, target, members, nonmembers, shift=0.1, per_class=True):
    roc, hist = _roc(rng, members, nonmembers, shift)
    hist["score"] = "negated distance" if target == "distilled_set" else "negated cross-entropy loss"
    auc = 0.5 + shift / 3
    attack = {
        "attack": name, "target": target, "description": description,
        "num_members": members, "num_nonmembers": nonmembers,
        "auc": auc, "auc_ci": [auc - 0.06, auc + 0.06],
        "tpr_at_1pct_fpr": 0.01 + shift / 20, "tpr_at_1pct_fpr_ci": [0.003, 0.025 + shift / 10],
        "tpr_at_01pct_fpr": 0.0, "tpr_at_01pct_fpr_ci": [0.0, 0.009],
        "epsilon_lower_bound": 0.0,
        "control": {"auc": 0.49, "auc_ci": [0.40, 0.58], "tpr_at_1pct_fpr": 0.02,
                    "num_a": nonmembers // 2, "num_b": nonmembers // 2},
        "roc": roc, "histogram": hist,
    }
    if per_class:
        attack["per_class"] = [
            {"class": "class a", "members": members // 2, "nonmembers": nonmembers // 2, "auc": auc + 0.02},
            {"class": "class b", "members": members // 2 - 3, "nonmembers": nonmembers // 2, "auc": 0.71},
            {"class": "class c", "members": 3, "nonmembers": 0, "auc": None},
        ]
    return attack


def make_site(rng, members=400, nonmembers=100, shift=0.1, dp=False, lira=False):
    attacks = [make_attack(rng, n, d, "student", members, nonmembers, shift) for n, d in STUDENT_ATTACKS]
    if lira:
        attacks.append(make_attack(rng, "lira", "likelihood ratio", "student", members, nonmembers, shift,
                                   per_class=False))
    attacks += [make_attack(rng, n, d, "distilled_set", members, nonmembers, 0.05) for n, d in DISTANCE_ATTACKS]
    part = {"epsilon": 7.9, "delta": 1e-5, "noise_multiplier": 0.9, "steps": 600}
    return {
        "answered": True, "error": None, "num_members": members, "num_nonmembers": nonmembers,
        "dp": {"epsilon": 7.9, "delta": 1e-5, "max_grad_norm": 1.0, "accountant": "prv",
               "parts": {"teacher": part, "generator": dict(part, epsilon=3.1)}} if dp else None,
        "near_duplicates": {"members_checked": members, "pixel": {"count": 0, "threshold": 312.5},
                            "feature": {"count": 1, "threshold": 0.8}},
        "attacks": attacks,
    }


def make_audit(num_sites: int = 3, passed: bool = False, seed: int = 0) -> dict:
    """A realistic "fedkr.audit/1" document: one site with DP, one leaky, the last not answering."""
    rng = np.random.default_rng(seed)
    sites = {"site-0": make_site(rng, dp=True, lira=True)}
    names = [EVIL_SITE] + [f"site-{i}" for i in range(2, num_sites)]
    for i, name in enumerate(names[: num_sites - 2]):
        sites[name] = make_site(rng, members=120 + 40 * i, nonmembers=60, shift=1.0 if i == 0 else 0.2)
    sites["site-9"] = {"answered": False, "error": "did not answer the audit <script>alert(1)</script>",
                       "attacks": []}
    failures = [] if passed else [{
        "site": EVIL_SITE, "attack": "loss", "metric": "auc_upper", "value": 0.71, "threshold": 0.6,
        "message": f"{EVIL_SITE}: loss attack AUC upper bound 0.710 > 0.600"}]
    return {
        "schema": "fedkr.audit/1",
        "release": {"id": "20261122-080000-abc", "artefacts": {
            "distilled.npz": "a" * 64, "student.safetensors": "b" * 64, "student_config.json": "c" * 64}},
        "fedkr_version": "0.1.0",
        "created": "2026-11-22T08:00:00+0000",
        "threat_model": "An outsider with the released student and distilled images tries to tell\n"
                        "whether a given patient image was in a site's training data.",
        "classes": CLASSES,
        "policy": {"confidence": 0.95, "max_auc_upper": 0.6, "max_tpr_at_1pct_fpr": 0.03,
                   "max_distance_auc_upper": 0.6,
                   "required_attacks": ["loss", "entropy", "rmia", "dcr_pixel", "dcr_feature"]},
        "decision": {"passed": passed, "failures": failures},
        "sites": sites,
    }


def make_samples(n_per_class: int = 5, shape=(8, 8, 1)):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    return rng.integers(0, 256, size=(labels.size, *shape), dtype=np.uint8), labels


@pytest.fixture(scope="module")
def page():
    images, labels = make_samples()
    return render_audit_html(make_audit(), images, labels)


HEADINGS = ["1. Verdict", "2. Identification", "3. Results per site", "4. ROC curves", "5. Score histograms",
            "6. Distance tests", "7. Sample of released images", "8. Per-class breakdown", "9. Limitations"]


def test_sections_in_order_with_verdict_first(page):
    positions = [page.find(h) for h in HEADINGS]
    assert all(p >= 0 for p in positions), [h for h, p in zip(HEADINGS, positions) if p < 0]
    assert positions == sorted(positions)
    assert 0 < page.find("BLOCKED") < page.find("3. Results per site")
    assert "PASSED" not in page
    # the failure is listed in the verdict with its numbers
    verdict = page[page.find("1. Verdict"): page.find("2. Identification")]
    assert "auc_upper" in verdict and "0.710" in verdict and "0.600" in verdict
    assert "did not answer" in verdict and "site-9" in verdict


def test_remote_strings_are_escaped(page):
    assert "<b>x</b>" not in page
    assert "site-&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_self_contained(page):
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//|file:)", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "<script" not in page
    assert not re.search(r"url\(\s*['\"]?[^#'\"\s]", page)  # only local url(#clip) references
    assert not re.search(r"href=\"[^#]", page)  # only in-page anchors
    assert page.count("<svg") >= 3 * 2  # ROC and histograms for the answered sites
    assert 'src="data:image/png;base64,' in page
    assert len(page) < 3_000_000


def test_site_details(page):
    assert "did not answer" in page
    assert "prv" in page and "noise multiplier" in page  # the DP site
    assert "not available" in page  # no DP on the other site, no per-class for lira
    assert "AUC rmia" in page and "AUC lira" not in page
    assert "no membership difference" in page and "n = 30 vs 30" in page


def test_without_samples_and_passed():
    doc = make_audit(num_sites=2, passed=True)
    html = render_audit_html(doc)
    assert "PASSED" in html and "BLOCKED" not in html
    assert "Sample images not available" in html
    assert html.find("PASSED") < html.find("3. Results per site")


def test_minimal_and_broken_documents_do_not_crash():
    assert "NO DECISION" in render_audit_html({})
    doc = make_audit(num_sites=2)
    broken = copy.deepcopy(doc)
    site = broken["sites"]["site-0"]
    del site["near_duplicates"], site["dp"]
    site["attacks"][0].pop("roc")
    site["attacks"][1]["histogram"] = {"edges": [0, 1], "members": [1, 2], "nonmembers": None}
    site["attacks"][2]["control"] = None
    site["attacks"][2]["auc_ci"] = None
    del broken["release"], broken["policy"]
    html = render_audit_html(broken, np.zeros((2, 28, 28, 3), np.uint8), None)
    assert "9. Limitations" in html and "not available" in html


def _payload(field: str) -> str:
    return f'<script>alert(1)</script>"\'{field}'


def _escaped(field: str) -> str:
    return f"&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;{field}"


def _hostile_audit() -> dict:
    """A document with a hostile string in every place a string can be."""
    doc = make_audit(num_sites=3)
    p = _payload
    doc.update(schema=p("schema"), fedkr_version=p("version"), created=p("created"), threat_model=p("threat"),
               classes=[p("class0"), "class b", "class c"])
    doc["release"] = {"id": p("release"), "artefacts": {p("artefact"): p("digest")}}
    doc["policy"][p("policykey")] = [p("policyitem")]
    doc["policy"]["required_attacks"].append(p("required"))
    doc["decision"]["failures"] = [{"site": p("fsite"), "attack": p("fattack"), "metric": p("fmetric"),
                                    "value": 0.7, "threshold": 0.6, "message": p("fmessage")}]
    sites = doc["sites"]
    site = sites.pop("site-0")
    site["error"] = p("partial")
    site["dp"]["accountant"] = p("accountant")
    site["dp"]["parts"][p("dppart")] = site["dp"]["parts"].pop("teacher")
    attack = site["attacks"][0]
    attack.update(attack=p("attack"), description=p("description"), target=p("target"))
    attack["histogram"]["score"] = p("score")
    attack["per_class"][0]["class"] = p("perclass")
    sites[p("site")] = site
    sites["site-9"]["error"] = p("error")
    return doc


def test_every_document_string_is_escaped_wherever_it_appears():
    from html.parser import HTMLParser

    page = render_audit_html(_hostile_audit(), *make_samples())

    class Tags(HTMLParser):
        tags: list = []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, attrs))

    parser = Tags()
    parser.feed(page)
    assert parser.tags and "script" not in {tag for tag, _ in parser.tags}
    attributes = [(name, value or "") for _, attrs in parser.tags for name, value in attrs]
    assert not [name for name, _ in attributes if name.startswith("on") or "alert" in name or "'" in name]
    assert not [value for _, value in attributes if "alert" in value or "javascript:" in value.lower()]
    assert "<script" not in page.lower()
    fields = ["schema", "version", "created", "threat", "class0", "release", "artefact", "digest", "policykey",
              "policyitem", "required", "fsite", "fattack", "fmetric", "fmessage", "partial", "accountant",
              "dppart", "attack", "description", "target", "perclass", "site", "error"]
    assert [f for f in fields if _escaped(f) not in page] == []
    # outside the SVG plots, no hostile string appears but in its escaped form
    html_only = re.sub(r"<svg.*?</svg>", "", page, flags=re.DOTALL)
    assert html_only.count("alert(1)") == html_only.count(_escaped("")[: -len("&#34;&#39;")])
    # in the plots, matplotlib writes the labels as escaped text
    svg = "".join(re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL))
    assert "&lt;script&gt;alert(1)" in svg and "<script" not in svg


def test_template_environment_escapes_and_refuses_undefined_names():
    import jinja2

    from fedkr.shared.audit_html import TEMPLATE, TEMPLATES, environment

    env = environment()
    assert env.autoescape is True
    assert env.undefined is jinja2.StrictUndefined
    assert env.from_string("{{ x }}").render(x='<b a="1">') == "&lt;b a=&#34;1&#34;&gt;"
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    source = (TEMPLATES / TEMPLATE).read_text()
    assert "|safe" not in source.replace(" ", "") and "autoescape false" not in source.lower()
    assert "<script" not in source.lower() and "@import" not in source and "<link" not in source


def test_only_the_svg_plots_are_passed_as_markup():
    from markupsafe import Markup

    from fedkr.shared import audit_html

    seen = []
    real = audit_html.environment

    def spy():
        env = real()
        template_render = env.get_template(audit_html.TEMPLATE).render

        class Template:
            def render(self, **context):
                seen.append(context)
                return template_render(**context)

        env.get_template = lambda name: Template()
        return env

    audit_html.environment = spy
    try:
        render_audit_html(make_audit(num_sites=2), *make_samples())
    finally:
        audit_html.environment = real

    def markups(value, path="context"):
        if isinstance(value, Markup):
            yield path
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from markups(item, f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                yield from markups(item, f"{path}[{i}]")
        elif hasattr(value, "__dataclass_fields__"):
            for key in value.__dataclass_fields__:
                yield from markups(getattr(value, key), f"{path}.{key}")

    found = list(markups(seen[0]))
    assert found and all(re.fullmatch(r"context\.figures\[\d+\]\.\w+\.svg", p) for p in found), found


def test_the_svg_guard_refuses_active_content():
    from fedkr.shared.audit_figures import _checked

    for text in ["<svg><script>x</script></svg>", '<svg><g onload="x"></g></svg>',
                 "<svg><foreignObject></foreignObject></svg>"]:
        with pytest.raises(ValueError):
            _checked(text)
    assert _checked('<svg><text x="1">on=3 &lt;b&gt;</text></svg>').startswith("<svg>")


def test_typed_view_reads_any_json_without_raising():
    from fedkr.shared.audit_view import AuditDocument

    doc = make_audit(num_sites=2)
    for site in doc["sites"].values():  # short curves, so that each of the many reads is quick
        for attack in site["attacks"]:
            attack["roc"] = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.7, 1.0]}
            attack["histogram"] = {"edges": [0.0, 1.0, 2.0], "members": [3, 4], "nonmembers": [4, 3]}
    wrong = [None, "x", "0.5", -1.5, float("nan"), True, [1, "a"], {"a": None}]

    def paths(value, path=()):
        yield path
        if isinstance(value, dict):
            for key, item in value.items():
                yield from paths(item, (*path, key))
        elif isinstance(value, list) and len(value) <= 6:
            for i, item in enumerate(value):
                yield from paths(item, (*path, i))

    count = 0
    for path in list(paths(doc)):
        for bad in wrong:
            if not path:
                AuditDocument.parse(bad)
                continue
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            good, parent[path[-1]] = parent[path[-1]], bad
            AuditDocument.parse(doc)
            parent[path[-1]] = good
            count += 1
    assert count > 1000


@pytest.mark.parametrize("bad", [None, "x", 7, [], {"a": [None]}])
def test_wrong_types_read_as_not_available(bad):
    doc = {key: bad for key in ("schema", "release", "fedkr_version", "created", "threat_model", "classes",
                                "policy", "decision", "sites")}
    html = render_audit_html(doc, bad, bad)
    assert "NO DECISION" in html and "not available" in html and "9. Limitations" in html
    site = make_site(np.random.default_rng(0), members=50, nonmembers=20)
    for key in list(site):
        site[key] = bad
    html = render_audit_html({"sites": {"s": site, "t": bad}, "decision": {"passed": True}})
    assert "PASSED" in html and "not available" in html


def test_write_audit_renders_the_documents_the_coordinator_and_the_standalone_audit_build(tmp_path):
    import json

    from fedkr.shared.audit_document import build_audit_document, write_audit
    from fedkr.shared.attack_report import AttackResult
    from fedkr.shared.audit_policy import AuditPolicy, decide_release
    from fedkr.shared.reports import AuditReport

    policy = AuditPolicy()
    results = tuple(AttackResult(a, "distilled_set" if a.startswith("dcr") else "student", 100, 100, 0.5,
                                 (0.45, 0.55), 0.01, (0.0, 0.02), 0.0, (0.0, 0.03), 0.0, 0.01, 0.01, (0.0, 0.05))
                    for a in policy.required_attacks)
    from fedkr.shared.utility import UtilityCounts

    utility = UtilityCounts(np.full(len(CLASSES), 10), np.full(len(CLASSES), 8), np.full(len(CLASSES), 9))
    replies = {"site-0": AuditReport("site-0", results, 100, 100, settings={"confidence": 0.95}, utility=utility),
               EVIL_SITE: "timed out <script>x</script>"}
    document = build_audit_document("run-1", {"distilled.npz": "d" * 64}, CLASSES, decide_release(replies, policy))
    images, labels = make_samples()
    assert write_audit(tmp_path, document, images, labels) == ["audit.json", "audit.html"]
    page = (tmp_path / "audit.html").read_text(encoding="utf-8")
    assert "BLOCKED" in page and "site-&lt;b&gt;x&lt;/b&gt;" in page and "<script" not in page.lower()
    assert "&lt;script&gt;x&lt;/script&gt;" in page and 'src="data:image/png;base64,' in page
    assert "ROC curves not available" in page  # these results carry no curve
    # the utility check: pooled and per site, the student next to the teacher, and the share kept
    assert "Utility check" in page and "all sites, pooled" in page
    ratio = f"{utility.utility_ratio():.2f}"
    assert page.count(f"<strong>{ratio}</strong>") == 2
    low, high = utility.adjusted_balanced_accuracy_interval("student")  # the interval the floor reads, pooled
    assert f'<span class="ci">[{low:.3f}, {high:.3f}]</span>' in page
    assert "cannot reach 0.25 (the upper end of its 95% interval" in page
    older = json.loads((tmp_path / "audit.json").read_text())
    del older["policy"]["min_adjusted_balanced_accuracy"]  # an audit from before the floor
    assert "this document's policy has no floor" in render_audit_html(older)
    older["policy"]["min_adjusted_balanced_accuracy"] = 0.0
    assert "the floor under the student's own adjusted balanced accuracy is off" in render_audit_html(older)
    assert render_audit_html(json.loads((tmp_path / "audit.json").read_text())).count("<section") == 9


def test_a_generator_only_dp_site_is_shown_with_what_its_epsilon_does_not_cover():
    doc = make_audit()
    doc["sites"]["site-0"]["dp"] = {
        "epsilon": 3.99, "delta": 4e-4, "max_grad_norm": 1.0, "accountant": "rdp", "models": "generator",
        "composition": "the generator only: the teacher trained without DP, so its soft labels and the student "
                       "are covered by the audit's attacks, not by epsilon",
        "parts": {"generator": {"epsilon": 3.99, "delta": 4e-4, "noise_multiplier": 3.5, "steps": 200}}}
    html = render_audit_html(doc)
    assert "Covers: the generator only: the teacher trained without DP" in html
    assert "<td>200</td><td><span class=\"na\">n/a</span></td></tr>" in html, "a part recorded without its optimizer says so"
    doc["sites"]["site-0"]["dp"]["parts"]["generator"].update(optimizer="adamw", learning_rate=0.002)
    assert "<td>adamw (0.002)</td>" in render_audit_html(doc)
    assert "<td>teacher</td>" not in html.split("site-0", 2)[-1].split("site-1")[0]
    assert "Noise and sampling" not in html, "a report written before the record said nothing about its randomness"
    doc["sites"]["site-0"]["dp"]["randomness"] = "secret"
    assert "Noise and sampling: secret (the operating system's randomness)." in render_audit_html(doc)
    doc["sites"]["site-0"]["dp"]["randomness"] = "unknown"
    assert "operating system" not in render_audit_html(doc), "only 'secret' is shown as secret"
    doc["sites"]["site-0"]["dp"]["randomness"] = "repeatable"
    assert '<strong class="error">Noise and sampling: repeatable</strong>, seeded from the run\'s seed' in render_audit_html(doc)
