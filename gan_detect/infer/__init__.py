"""Inference: full-image re-scoring, the evaluation loop, the :class:`Pipeline` (no training code)."""
