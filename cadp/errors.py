"""Typed errors with plain-language messages, safe to show to a user as they are."""


class CadpError(ValueError):
    """Base class of every error cadp raises on purpose; the message is meant for users."""


class InputError(CadpError):
    """An uploaded or given input (image, CSV, parameter) cannot be used."""

    decoded_pixels = 0  # an image that failed to decode: the pixels its header declared (what trying cost)


class ModelError(CadpError):
    """A model folder or Hub repository cannot be loaded safely."""
