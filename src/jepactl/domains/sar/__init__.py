"""SAR target chips (SAR-JEPA): gradient-feature targets and the few-shot probe."""
