"""Typed errors with plain-language messages, safe to show to a user as they are."""


class CadpError(ValueError):
    """Base class of every error cadp raises on purpose; the message is meant for users."""


class InputError(CadpError):
    """An uploaded or given input (image, CSV, parameter) cannot be used."""


class ModelError(CadpError):
    """A model folder or Hub repository cannot be loaded safely."""
