"""The ECG encoder at another crop length: same weights, a position table for the new length."""

from __future__ import annotations

from jepactl.nn.vit import TransformerEncoder


def encoder_for_length(encoder: TransformerEncoder, signal_length: int) -> TransformerEncoder:
    """Return ``encoder``'s weights in an encoder for ``signal_length``-sample inputs.

    Positions are a fixed sin-cos table (not a parameter), so the same weights serve any crop
    length; ECG-JEPA evaluates 2.5 s crops with an encoder pretrained on 10 s.
    """
    if encoder.tokenizer_config.get("signal_length") == signal_length:
        return encoder
    config = dict(encoder.tokenizer_config, signal_length=signal_length)
    resized = TransformerEncoder(config, encoder.config)
    resized.load_state_dict(encoder.state_dict())
    return resized.to(next(encoder.parameters()).device).train(encoder.training)
