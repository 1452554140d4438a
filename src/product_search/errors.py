"""Errors the project raises on purpose, kept free of heavy imports so that the
hooks can name them."""


class UserError(ValueError):
    """Bad input the project rejects on purpose (a missing column, a parameter
    out of range, inconsistent judgments), with a message that says what to
    fix. A ``ValueError``, so callers that catch ``ValueError`` still do; a
    bare ``ValueError`` from our code is a bug and keeps its traceback."""


class PromotionRefusedError(RuntimeError):
    """The promotion gate kept the serving model; the message says why."""
