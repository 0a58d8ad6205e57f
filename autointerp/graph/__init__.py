"""Feature-level attribution graphs over transcoder latents (Ameisen et al. 2025): the local
replacement model (models/replacement.py), direct effects by batched backward passes, pruning by
influence and circuit-tracer's scores (prune.py), interventions that check the graph (validate.py).
Store-free: faces store what build_graph returns."""

from .attribution import AttributionGraph, build_graph

__all__ = ["AttributionGraph", "build_graph"]
