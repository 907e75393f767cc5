"""Relational concepts: concept-JEPA and the language-model baseline for the reversal curse."""
