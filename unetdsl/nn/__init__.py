"""Building blocks: torch only, nothing of pydantic or the spec language. Every module here
scripts with `torch.jit.script` (no *args/**kwargs, typed Optionals, decisions made in __init__)."""
