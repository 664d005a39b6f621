"""CADP: content-aware differential privacy with conditional invertible networks."""

from cadp.errors import CadpError, InputError, ModelError

__all__ = ["CadpError", "InputError", "ModelError"]
__version__ = "0.1.0"
