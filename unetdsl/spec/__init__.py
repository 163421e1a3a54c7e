"""The unetdsl language (pydantic models), its resolved form and its validation."""

from .models import FORMAT_VERSION, Spec
from .resolved import ResolvedSpec

__all__ = ["FORMAT_VERSION", "ResolvedSpec", "Spec"]
