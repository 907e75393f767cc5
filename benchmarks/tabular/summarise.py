"""Print the probe results and the last collapse monitors of each run under OUT_DIR."""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
for probe in sorted(out.glob("*.probe.json")):
    run = probe.name.removesuffix(".probe.json")
    result = json.loads(probe.read_text())
    log = out / run / "metrics.jsonl"
    if not log.is_file():  # a --random-init control has no run of its own
        print(f"## {run} ({result['encoder']})")
    else:
        metrics = [json.loads(line) for line in log.read_text().splitlines()]
        first, last = metrics[0], metrics[-1]
        print(
            f"## {run}: step {last['step']}, loss {first['loss']:.4f} -> {last['loss']:.4f}, "
            f"embed_std {first.get('embed_std', 0):.4f} -> {last.get('embed_std', 0):.4f}, "
            f"effective_rank {first.get('effective_rank', 0):.2f} -> "
            f"{last.get('effective_rank', 0):.2f}"
        )
    for key, value in result.items():
        if key.endswith("_std") or not isinstance(value, float):
            continue
        std = result.get(key + "_std")
        print(f"  {key:28s} {value:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
