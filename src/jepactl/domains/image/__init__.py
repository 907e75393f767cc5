"""Images (I-JEPA and DMT-JEPA): 2-D multi-block masks over image patches."""
