"""ECG (ECG-JEPA): WFDB/npy records, 1-D multi-block masks, beat and record probes."""
