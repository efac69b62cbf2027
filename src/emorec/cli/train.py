"""CLI: train sub-commands (placeholder until the owning issue lands)."""


def register(sub) -> None:
    pass
