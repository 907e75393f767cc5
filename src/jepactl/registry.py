"""Method registry: recipe ``method`` name -> the module whose ``SPEC`` is the method's contract.

Each method module (``domains/<domain>/...``) ends with ``SPEC = MethodSpec(...)``
(``methods/base.py``): its recipe class (a :class:`jepactl.recipe.Recipe` subclass whose field
defaults are the method's defaults) and its hooks. Adding a method is one line here.

Modules are named as strings and imported on first use, like plugin entry points. This is what
lets the registry sit in the lowest layer (``recipe_from_dict`` needs a recipe's class) while the
domains sit in the highest: nothing imports a domain, the trainer and the evaluation toolkit look
a method up by name. It also keeps ``jepactl --help`` fast and one domain's optional dependency
from breaking another.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from jepactl.errors import RecipeError

if TYPE_CHECKING:
    from jepactl.methods.base import MethodSpec

METHODS: dict[str, str] = {
    "ijepa": "jepactl.domains.image.ijepa",
    "linear-jepa-mae": "jepactl.domains.linear.method",
    "ecg-jepa": "jepactl.domains.ecg.method",
    "concept-lm": "jepactl.domains.concepts.concept_lm",
    "concept-jepa": "jepactl.domains.concepts.concept_jepa",
    "tjepa": "jepactl.domains.tabular.method",
    "sar-jepa": "jepactl.domains.sar.method",
    "dmt-jepa": "jepactl.domains.image.dmt_jepa",
    "seq-jepa": "jepactl.domains.views.method",
    "act-jepa": "jepactl.domains.policy.method",
    "ad-l-jepa": "jepactl.domains.lidar.method",
    "occupancy-mae": "jepactl.domains.lidar.occupancy",
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
