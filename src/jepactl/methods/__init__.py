"""Method registry: recipe ``method`` name -> module whose ``SPEC`` is the method's contract.

Each method module ends with ``SPEC = MethodSpec(...)`` (``methods/base.py``): its recipe class
(a :class:`jepactl.recipe.Recipe` subclass whose field defaults are the method's defaults) and
its hooks. Modules are imported lazily so that ``jepactl --help`` stays fast and one domain's
optional dependency never breaks another.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from jepactl.errors import RecipeError

if TYPE_CHECKING:
    from jepactl.methods.base import MethodSpec

METHODS: dict[str, str] = {
    "ijepa": "jepactl.methods.ijepa",
    "linear-jepa-mae": "jepactl.methods.linear_dynamics",
    "ecg-jepa": "jepactl.methods.ecg_jepa",
    "concept-lm": "jepactl.methods.concept_lm",
    "concept-jepa": "jepactl.methods.concept_jepa",
    "tjepa": "jepactl.methods.tjepa",
    "sar-jepa": "jepactl.methods.sar_jepa",
    "dmt-jepa": "jepactl.methods.dmt_jepa",
}


def method_spec(name: str) -> MethodSpec:
    """Return the registered method ``name``'s spec; a RecipeError names the known ones."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(METHODS)}"
        raise RecipeError(f"unknown method '{name}' in recipe key 'method'{hint}")
    return importlib.import_module(METHODS[name]).SPEC


def recipe_class(name: str) -> type:
    return method_spec(name).recipe
