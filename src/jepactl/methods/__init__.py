"""The method contract (base.py), the generic losses and the probe request methods read."""
