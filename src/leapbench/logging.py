"""Run logging: local files are the source of truth; Weights & Biases mirrors them when enabled.

Files in the run directory:

* ``metrics.jsonl``: one JSON object per row, ``{"meta_step", "split", ...}`` (``split`` is ``train``, ``val``,
  ``test_at``, ``test`` or ``test_progress/<task>``; evaluation rows carry their mean error curve);
* ``summary.json``: the final scores and provenance, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from .errors import ConfigError, write_error


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """A temporary file beside ``path``; on success it is synced and renamed over ``path``, else removed.

    An ``OSError`` (disk full, read-only folder) becomes a ``WriteError``; ``path`` keeps its old content.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from e
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=1)


class RunLogger:
    """Appends metric rows to ``metrics.jsonl`` and mirrors them to W&B (``wandb=True``).

    The W&B run id is derived from the run name, so a rerun of the same run resumes the same W&B run (offline:
    one more segment under ``wandb/``). Rows reach W&B at ``commit()`` (``loop.MetaTraining`` commits after each
    checkpoint, a long test after each report), their index in metrics.jsonl as W&B's step: rows a crash loses
    are the rows a resumed run redoes, so the synced history holds every step once, in order. At the end W&B
    gets the summary, one table of every evaluation curve and the tested initialization (``init.pt``) as a
    model artifact. If W&B cannot start, logging continues locally with one warning.
    """

    def __init__(
        self,
        run_dir: str | Path,
        run_name: str,
        config: dict,
        wandb: bool = False,
        mode: str = "offline",
        project: str = "leapbench",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.rows = 0
        if self.path.exists():
            with self.path.open() as f:
                self.rows = sum(1 for _ in f)
        self.metrics = open(self.path, "a")
        self.wandb = None
        self.pending: list[tuple[int, dict]] = []  # (row index, row) not yet mirrored to W&B
        self.streams: set[str] = set()  # test_progress/<task> splits whose W&B x-axis is already their frames
        if wandb:
            self.wandb = self._start_wandb(run_name, config, mode, project, entity, group, job_type, tags)

    def _start_wandb(self, run_name, config, mode, project, entity, group, job_type, tags):
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                job_type=job_type,
                tags=list(tags or []),
                name=run_name,
                id=hashlib.sha1(run_name.encode()).hexdigest()[:16],
                resume="allow",
                dir=str(self.run_dir),
                mode=mode,
                config=config,
                reinit="finish_previous",
            )
            run.define_metric("meta_step")
            for prefix in ("train", "val", "test_at"):
                run.define_metric(f"{prefix}/*", step_metric="meta_step")
            return run
        except Exception as e:  # noqa: BLE001 - W&B must never stop a run
            warnings.warn(f"W&B could not start ({type(e).__name__}: {e}); logging to local files only.", stacklevel=2)
            return None

    def log(self, row: dict) -> None:
        try:
            self.metrics.write(json.dumps(row) + "\n")
            self.metrics.flush()
        except OSError as e:
            raise write_error(self.path, e) from e
        if self.wandb is not None:
            self.pending.append((self.rows, row))
        self.rows += 1

    def commit(self) -> None:
        """Mirror the rows logged since the last commit to W&B: call it once they can no longer be redone."""
        rows, self.pending = self.pending, []
        if self.wandb is None:
            return
        try:
            for index, row in rows:  # W&B's step is the row's index in metrics.jsonl: resumed runs continue it
                split = row["split"]
                if split.startswith("test_progress/") and "frames" in row and split not in self.streams:
                    self.wandb.define_metric(f"{split}/return", step_metric=f"{split}/frames")  # return vs frames
                    self.streams.add(split)
                data: dict[str, Any] = {"meta_step": row["meta_step"]}
                data |= {
                    f"{row['split']}/{k}": v
                    for k, v in row.items()
                    if k not in ("split", "meta_step") and isinstance(v, (int, float))
                }
                self.wandb.log(data, step=index)
        except Exception as e:  # noqa: BLE001
            warnings.warn(
                f"W&B logging failed ({type(e).__name__}: {e}); continuing with local files only.", stacklevel=2
            )
            self.wandb = None

    def _log_curves_and_init(self) -> None:
        """One table of every evaluation curve of the run (from metrics.jsonl, so a resumed run's are all there)
        and the tested initialization as a model artifact."""
        import wandb

        run = self.wandb
        if run is None:
            return

        rows = [json.loads(line) for line in self.path.read_text().splitlines()]
        curves = [[r["split"], r["meta_step"], i, e] for r in rows if "curve" in r for i, e in enumerate(r["curve"])]
        if curves:
            table = wandb.Table(data=curves, columns=["split", "meta_step", "adapt_step", "error"])
            run.log({"curves": table}, step=len(rows))
        init = self.run_dir / "init.pt"
        if init.exists():
            artifact = wandb.Artifact(f"init-{run.id}", type="model", description="the tested initialization (init.pt)")
            artifact.add_file(str(init))
            run.log_artifact(artifact, aliases=["tested"])

    def truncate(self, rows: int) -> None:
        """Keep the first ``rows`` rows of ``metrics.jsonl`` (a resumed run redoes the rest); refuse a file that
        lost some of them (cut, edited or deleted since the checkpoint), rather than resume with a gap."""
        self.metrics.close()
        kept = self.path.read_text().splitlines(keepends=True)[:rows]
        whole = sum(1 for line in kept if line.endswith("\n") and _is_json(line))
        if whole < rows:
            raise ConfigError(
                f"{self.path} holds {whole} complete rows, but the checkpoint was written after {rows}: the run's "
                "history was cut or edited since. Restore the file, or run again with overwrite=true to start afresh."
            )
        with atomic_open(self.path) as f:
            f.writelines(kept)
        self.rows = len(kept)
        self.metrics = open(self.path, "a")

    def summary(self, summary: dict) -> None:
        write_json(self.run_dir / "summary.json", summary)
        self.commit()
        if self.wandb is not None:
            try:
                self._log_curves_and_init()
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"W&B could not log the curves or init.pt ({type(e).__name__}: {e}).", stacklevel=2)
            flat = {
                f"{k}/{kk}": vv
                for k, v in summary.items()
                if isinstance(v, dict)
                for kk, vv in v.items()
                if isinstance(vv, (int, float, str))
            }
            flat.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            self.wandb.summary.update(flat)

    def close(self, exit_code: int = 0) -> None:
        """Finish; rows not committed are dropped from W&B (a resumed run logs them again)."""
        self.metrics.close()
        self.pending = []
        if self.wandb is not None:
            try:
                self.wandb.finish(exit_code=exit_code)
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"W&B finish failed ({type(e).__name__}: {e}).", stacklevel=2)
            self.wandb = None


class NullLogger:
    """What ranks other than 0 log to under torchrun: nothing."""

    rows = 0

    def log(self, row: dict) -> None: ...

    def commit(self) -> None: ...

    def truncate(self, rows: int) -> None: ...

    def summary(self, summary: dict) -> None: ...

    def close(self, exit_code: int = 0) -> None: ...


class TestProgress:
    """The monitor of a long test adaptation (Atari: frames per game): a progress bar with ETA per task, and each
    report streamed to the logger (and W&B) as a ``test_progress/<task>`` row while the test runs."""

    def __init__(self, logger, step: int, show: bool) -> None:
        self.logger, self.step, self.show = logger, step, show
        self.bars: dict[str, tqdm] = {}

    def __call__(self, task: str, done: int, total: int, score: float | None) -> None:
        if task not in self.bars:
            self.bars[task] = tqdm(
                total=total,
                desc=f"test {task}",
                unit="frame",
                unit_scale=True,
                disable=not self.show,
                dynamic_ncols=True,
            )
        bar = self.bars[task]
        bar.update(done - bar.n)
        if score is not None:
            bar.set_postfix(avg_return=f"{score:.1f}")
            self.logger.log({"meta_step": self.step, "split": f"test_progress/{task}", "frames": done, "return": score})
            self.logger.commit()

    def __enter__(self) -> TestProgress:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False
