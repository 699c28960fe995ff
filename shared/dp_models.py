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


def teacher_guidance_refusal(scale: float, models: str | None) -> str | None:
    """Why a site may not sample with its teacher's guidance at `scale` under DP of `models` (a
    `DP_MODELS` value; None: the site trained without DP), or None where it may.

    Guidance by the teacher is post-processing only where the teacher is itself private: under
    `DP_GENERATOR_ONLY` the teacher trained without DP, and guided images would depend on the members
    beyond the generator's epsilon, which is all that run's images claim.
    """
    if scale > 0 and models == DP_GENERATOR_ONLY:
        return (f"generator-teacher-guidance {scale:g} needs a teacher trained with DP: with dp-models "
                f"'{DP_GENERATOR_ONLY}' the images would depend on the members beyond epsilon")
    return None
