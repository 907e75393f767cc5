"""jepactl: pretrain, probe, fine-tune and export JEPA models on every published domain."""

from __future__ import annotations

from jepactl.version import __version__

__all__ = ["__version__", "load_encoder"]


def load_encoder(path):
    """Return the encoder exported to ``path`` (``model.safetensors`` + ``config.json``)."""
    from jepactl.export import load_encoder as _load

    return _load(path)
