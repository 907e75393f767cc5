"""Run the jepactl command line and, at exit, write this process's peak memory to a JSON file.

``python benchmarks/cluster/rss_probe.py pretrain ...`` behaves as ``jepactl pretrain ...``;
under ``accelerate launch`` every rank runs it and writes ``$JEPACTL_RSS_DIR/rank<RANK>.json``:

- ``peak_rss_mib``: the kernel's high-water mark of the process's resident set (``VmHWM``);
- ``peak_anon_mib`` / ``peak_file_mib``: the largest anonymous (heap: what the process itself
  holds) and file-backed (mapped files: clean page cache, shared by the ranks of a machine and
  dropped by the kernel under memory pressure) parts of it, sampled every 50 ms;
- ``children_peak_rss_mib``: the largest of its reaped children (DataLoader workers, and
  short-lived helpers such as ``git`` for env.json, whose peak counts the pages they shared
  with the parent at fork, so it is about the parent's size).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import threading
from pathlib import Path

PEAKS = {"RssAnon": 0, "RssFile": 0}


def status() -> dict[str, int]:
    """Return /proc/self/status's memory lines in KiB."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    return values


def sample(stop: threading.Event) -> None:
    while not stop.wait(0.05):
        now = status()
        for key in PEAKS:
            PEAKS[key] = max(PEAKS[key], now.get(key, 0))


def report(stop: threading.Event) -> None:
    stop.set()
    now = status()
    for key in PEAKS:
        PEAKS[key] = max(PEAKS[key], now.get(key, 0))
    folder = Path(os.environ.get("JEPACTL_RSS_DIR", "."))
    rank = int(os.environ.get("RANK", "0"))
    folder.mkdir(parents=True, exist_ok=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    doc = {
        "rank": rank,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "peak_rss_mib": round(now["VmHWM"] / 1024, 1),
        "peak_anon_mib": round(PEAKS["RssAnon"] / 1024, 1),
        "peak_file_mib": round(PEAKS["RssFile"] / 1024, 1),
        "children_peak_rss_mib": round(children / 1024, 1),
    }
    (folder / f"rank{rank}.json").write_text(json.dumps(doc) + "\n")


if __name__ == "__main__":
    stop = threading.Event()
    threading.Thread(target=sample, args=(stop,), daemon=True).start()
    atexit.register(report, stop)
    from jepactl.cli import main

    sys.argv = ["jepactl", *sys.argv[1:]]
    main()
