"""Which of a site's models DP-SGD trains: the names `DPConfig.models` takes and the audit reads back.

Kept apart from `shared/dp.py`, which imports torch, so that the audit's readers (`audit_view` and
the page built on it) stay free of torch.
"""

#: Both models, the per-site budget split between them: everything the site sends is covered.
DP_BOTH_MODELS = "teacher+generator"
#: The generator alone, with the whole budget; the teacher trains without DP.
DP_GENERATOR_ONLY = "generator"
#: Every value `DPConfig.models` (and `--dp-models`) accepts.
DP_MODELS = (DP_BOTH_MODELS, DP_GENERATOR_ONLY)
