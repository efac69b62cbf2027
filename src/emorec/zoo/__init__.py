"""Built-in models: trained by this project's own commands, shipped in the package with a model card.

`registry` (names -> folders, cards; no torch) sits low so every command that takes a RUN can
also take a built-in model's name; `card` renders MODEL_CARD.md from the measured card.json;
`recipes` says how each model is made and what it is for; `build` re-creates one from
`../shared` with the card's commands (it runs train, fit and evaluate, so it sits at the top).
"""

from emorec.zoo.registry import BUILTIN_NAMES, BuiltinModel, builtin_model, is_builtin_name, list_builtin, resolve_model

__all__ = ["BUILTIN_NAMES", "BuiltinModel", "builtin_model", "is_builtin_name", "list_builtin", "resolve_model"]
