"""What the site and the coordinator both import: data, models, the generator, shards, privacy metrics.

Nothing here decides policy or talks to the network; both roles build on these pieces.
"""
