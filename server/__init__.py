"""The coordinator: round loop, pool, distillation, student, release gate and bundle.

It never receives or stores real patient images: only synthetic shards and metrics reach it.
"""
