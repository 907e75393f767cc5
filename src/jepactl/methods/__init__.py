"""Method registry: recipe ``method`` name -> module that defines its recipe and model.

Each method module exposes ``RECIPE`` (a :class:`jepactl.recipe.Recipe` subclass whose field
defaults are the method's defaults) and ``build(recipe) -> JEPAMethod``. Modules are imported
lazily so that ``jepactl --help`` stays fast and one domain's optional dependency never breaks
another.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from jepactl.errors import RecipeError

METHODS: dict[str, str] = {
    "ijepa": "jepactl.methods.ijepa",
    "linear-jepa-mae": "jepactl.methods.linear_dynamics",
    "ecg-jepa": "jepactl.methods.ecg_jepa",
    "concept-lm": "jepactl.methods.concept_lm", "concept-jepa": "jepactl.methods.concept_jepa",
    "tjepa": "jepactl.methods.tjepa",
    "sar-jepa": "jepactl.methods.sar_jepa", "dmt-jepa": "jepactl.methods.dmt_jepa",
}


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(METHODS)}"
        raise RecipeError(f"unknown method '{name}' in recipe key 'method'{hint}")
    return importlib.import_module(METHODS[name])


def recipe_class(name: str) -> type:
    return method_module(name).RECIPE
