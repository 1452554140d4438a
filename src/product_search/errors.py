"""Errors the project raises on purpose, kept free of heavy imports so that the
hooks can name them."""


class PromotionRefusedError(RuntimeError):
    """The promotion gate kept the serving model; the message says why."""
