"""Bridges to other model libraries (diffusers)."""
