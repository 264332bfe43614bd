"""Upload the offline W&B runs under a runs folder, each run's segments in the order they were written.

    python scripts/sync_wandb.py runs             # needs network and a W&B login (`wandb login`)
    python scripts/sync_wandb.py runs --dry-run   # print what would be synced, in order

A run that was resumed has one offline segment per start (``<run>/wandb/offline-run-<time>-<id>``), all with
the same run id. They must reach W&B oldest first: W&B keeps a step only if it is above the last one it has.
The runner logs each metrics row with its row index as the step, and only rows a resumed run will not redo,
so the segments in order hold every step once. Runs are synced four at a time; one run's segments one by one.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) records
HEADER = 7


def records(path: Path):
    """Every record (``wandb_internal_pb2.Record``) of an offline ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, parts = path.read_bytes(), HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # the tail of a block too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        parts += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def history(segment: Path) -> list[dict[str, str]]:
    """The history rows of one offline segment: ``{key: JSON value}``, W&B's own ``_step`` included."""
    rows = []
    for f in sorted(segment.glob("run-*.wandb")):
        for r in records(f):
            if r.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): i.value_json for i in r.history.item})
    return rows


def segments(runs: Path) -> dict[Path, list[Path]]:
    """Per run folder, its offline segments oldest first (by the time in their names, then by first step)."""
    out: dict[Path, list[Path]] = {}
    for seg in runs.rglob("offline-run-*"):
        if seg.is_dir():
            out.setdefault(seg.parent.parent, []).append(seg)

    def first_step(seg: Path) -> int:
        steps = [int(r["_step"]) for r in history(seg)[:1] if "_step" in r]
        return steps[0] if steps else -1

    return {run: sorted(segs, key=lambda s: (s.name.split("-")[2], first_step(s))) for run, segs in sorted(out.items())}


def sync_run(wandb: str, segs: list[Path]) -> int:
    for seg in segs:
        code = subprocess.run([wandb, "sync", str(seg)]).returncode
        if code:
            return code
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", default="runs", type=Path)
    p.add_argument("--dry-run", action="store_true", help="print the segments in the order they would be synced")
    args = p.parse_args()
    if not args.runs.is_dir():
        print(
            f"error: {args.runs} is not a folder; name the runs folder (paths.runs, default ./runs).", file=sys.stderr
        )
        sys.exit(2)
    plan = segments(args.runs)
    if args.dry_run:
        for run, segs in plan.items():
            print(run, *(s.name for s in segs), sep="\n  ")
        return
    wandb = str(Path(sys.executable).with_name("wandb"))
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda segs: sync_run(wandb, segs), plan.values()))
    print(f"synced {sum(c == 0 for c in codes)} of {len(codes)} runs", file=sys.stderr)
    sys.exit(1 if any(codes) else 0)


if __name__ == "__main__":
    main()
