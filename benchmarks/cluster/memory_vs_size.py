"""Per-rank peak memory of a short pretraining at 1x and 10x the data, on one reader.

``--reader parquet``: CIFAR-10's training parquet files (30,000 images), the 10x set being the
same files linked ten times under new names; I-JEPA reads them through ``datasets`` (each scale
starts from an empty ``HF_DATASETS_CACHE``, so the peak includes the one-time parquet -> Arrow
conversion; the Arrow cache is then memory-mapped and one image decoded per sample).
``--reader ecg``: the 48 MIT-BIH records (WFDB 212, 30 min each), the 10x set being ten
folders of links to them; ECG-JEPA reads each crop's samples from its record on demand.

Each scale pretrains the same tiny model for the same number of steps under ``--processes``
ranks (``accelerate launch --multi_gpu`` on CPU, gloo), with ``train.num_workers=0`` so the
reader runs in the measured process; every rank writes its peaks through ``rss_probe.py``
(VmHWM, and the anonymous and file-backed parts of the resident set).

Usage, from the repository root:
  .venv/bin/python benchmarks/cluster/memory_vs_size.py [--reader parquet|ecg] [--processes 2]
      [--steps 50] [--data FOLDER] [--work /tmp/jepactl-memory]
  .venv/bin/python benchmarks/cluster/memory_vs_size.py --smoke   (generated 96 images, 2 steps)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ECG_TINY = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "data.pretrain_split=all",  # the copies' record names (c3/101) are in no split list
    "train.batch_size=8",
    "train.num_workers=0",
    "train.log_every=1",
    "train.precision=fp32",
]
TINY = [
    "data.image_size=16",
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "mask.min_keep=2",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.log_every=1",
    "train.precision=fp32",
    "optim.warmup_steps=2",
]


def smoke_source(folder: Path, count: int = 96) -> Path:
    """Write ``count`` small generated images as one HF parquet file (for --smoke)."""
    import io

    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        rows.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict(
        {"image": rows, "label": [i % 10 for i in range(count)]}, features=features
    )
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def replicate(source: Path, scale: int, target: Path) -> tuple[Path, int]:
    """Link the training parquet files of ``source`` ``scale`` times into ``target``."""
    files = sorted(source.glob("train-*.parquet"))
    if not files:
        raise SystemExit(f"no train-*.parquet files in {source}")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    total = len(files) * scale
    size = 0
    for copy in range(scale):
        for k, file in enumerate(files):
            index = copy * len(files) + k
            (target / f"train-{index:05d}-of-{total:05d}.parquet").symlink_to(file.resolve())
            size += file.stat().st_size
    return target, size


def replicate_records(source: Path, scale: int, target: Path) -> tuple[Path, int]:
    """Link every file of ``source`` into ``scale`` sub-folders of ``target``."""
    files = sorted(p for p in source.iterdir() if p.is_file())
    shutil.rmtree(target, ignore_errors=True)
    size = 0
    for copy in range(scale):
        (target / f"c{copy}").mkdir(parents=True)
        for file in files:
            (target / f"c{copy}" / file.name).symlink_to(file.resolve())
            size += file.stat().st_size
    return target, size


def samples_of(reader: str, folder: Path) -> int:
    """The data set's length as the pretraining reader sees it (rows, or ECG crop segments)."""
    if reader == "ecg":
        from jepactl.recipe import load_recipe
        from jepactl.registry import method_spec

        recipe = load_recipe("ecg/ecg-jepa-cpu", ECG_TINY)
        return len(method_spec("ecg-jepa").pretrain_data(recipe, str(folder)).dataset)
    return rows_of(folder)


def rows_of(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet")))


def run_scale(args, data: Path, scale: int, work: Path) -> dict:
    cache, rss, run = work / f"hf-cache-{scale}x", work / f"rss-{scale}x", work / f"run-{scale}x"
    for folder in (cache, rss, run):
        shutil.rmtree(folder, ignore_errors=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": str(cache),
        "JEPACTL_RSS_DIR": str(rss),
    }
    probe = str(ROOT / "benchmarks" / "cluster" / "rss_probe.py")
    command = [sys.executable, probe]
    if args.processes > 1:
        launcher = str(Path(sys.executable).parent / "accelerate")
        command = [launcher, "launch", "--multi_gpu", "--num_processes", str(args.processes)]
        command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command += [probe]
    recipe, tiny = ("ecg/ecg-jepa-cpu", ECG_TINY) if args.reader == "ecg" else ("image/tiny", TINY)
    command += ["pretrain", recipe, "--data", str(data), "--out", str(run)]
    command += ["--max-steps", str(args.steps), "--quiet", *tiny]
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - began
    ranks = [json.loads(p.read_text()) for p in sorted(rss.glob("rank*.json"))]
    cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "scale": scale,
        "samples": samples_of(args.reader, data),
        "wall_s": round(wall, 1),
        "arrow_cache_mib": round(cache_bytes / 2**20, 1),
        "ranks": ranks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader", choices=["parquet", "ecg"], default="parquet")
    parser.add_argument("--data", default=None, help="default: CIFAR-10 parquet / MIT-BIH")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--work", default="/tmp/jepactl-memory")
    parser.add_argument("--smoke", action="store_true", help="generated data, 1x/2x, 2 steps")
    args = parser.parse_args()
    work = Path(args.work)
    default = "images/cifar10" if args.reader == "parquet" else "ecg/mitdb"
    source = Path(args.data or ROOT.parent / "shared" / "data" / default)
    copy = replicate_records if args.reader == "ecg" else replicate
    if args.smoke and args.reader == "parquet":
        source = smoke_source(work / "smoke-source")
    if args.smoke:
        args.scales, args.steps = [1, 2], 2
    results = []
    for scale in args.scales:
        data, size = copy(source, scale, work / f"data-{scale}x")
        result = run_scale(args, data, scale, work)
        result["data_mib"] = round(size / 2**20, 1)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{args.reader}, {args.processes} process(es), {args.steps} steps:")
    print("| data | samples | data MiB | cache MiB | rank | peak RSS MiB | anon | file | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for rank in r["ranks"]:
            print(
                f"| {r['scale']}x | {r['samples']} | {r['data_mib']} | {r['arrow_cache_mib']} | "
                f"{rank['rank']} | {rank['peak_rss_mib']} | {rank['peak_anon_mib']} | "
                f"{rank['peak_file_mib']} | {r['wall_s']} |"
            )
    if not args.smoke:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
