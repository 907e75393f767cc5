"""Sequences of views with actions (seq-JEPA): parameterised transformations as actions."""
