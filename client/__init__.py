"""The hospital site: local data, teacher and generator training, synthesis, local audit, outbound gate.

Nothing in this package sends real images, or weights trained on real images, off the site.
"""
