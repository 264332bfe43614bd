"""The one aggregation: exported runs -> one tidy table per experiment and scale (``runs.csv``, pandas) -> cell
means, standard deviations and counts, and the reference method's paired differences to every other method.

A :class:`Spec` per experiment says what a row of its table is (the cell key), which scores it reports, which
way is better and where the paper's numbers are. Every table, figure and notebook reads ``runs.csv`` (or the
per-run curves); nothing else groups runs. Runs are paired by seed: one seed is one split and one initialization.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from . import registry
from .data.multicv import DATASETS

# Columns of runs.csv that every experiment has, in order; a spec's cell key and scores follow.
COUNTS = ("num_pretrain", "split_seed", "val_best_step", "meta_steps_done")  # integer columns that may have gaps
RUN_COLUMNS = ["experiment", "scale", "method", "label", "color", "cell", "num_pretrain", "seed", "split_seed"]
TAIL_COLUMNS = [
    "val_best_step",
    "meta_steps_done",
    "stopped_early",
    "mean_adapt_steps",
    "wall_time_s",
    "commit",
    "command",
    "run",
]
BOOTSTRAP_FROM = 10  # seeds from which paired differences also get a bootstrap interval
BOOTSTRAP_SAMPLES = 10_000
# Figure metadata without dates or versions, so that regenerating a figure rewrites the same bytes.
STABLE_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}


@dataclass(frozen=True)
class Spec:
    experiment: str
    name: str  # the outputs: <name>.csv (cells), <name>_paired.csv, <name>.md
    cell: str  # the column that names a table row: num_pretrain, heldout or game
    cell_title: str
    scores: dict[str, str]  # runs.csv column -> heading, the first is the headline score
    higher_is_better: bool = False
    paper: str | None = None  # results/paper/<file>: the paper's table, long or wide
    reference: str = "leap"  # paired differences are reference - other method
    varied: tuple[str, ...] = ()  # config keys a sweep varies, recorded per run
    cell_order: tuple = ()  # row order when the cell key is not a number (else numeric, else first seen)
    names: dict[str, str] = field(default_factory=dict)  # display names of cells


SPECS = {
    "omniglot": Spec(
        "omniglot",
        "table1",
        "num_pretrain",
        "tasks",
        {"test_error": "test error (%)", "auc": "AUC", "train_error": "train error (%)"},
        paper="table1.csv",
        varied=("train.meta_steps", "train.meta_batch_size", "inner.steps", "eval.stop_on", "data.augment"),
    ),
    "multicv": Spec(
        "multicv",
        "table2",
        "heldout",
        "held-out task",
        {"test_error": "test error (%)", "train_error": "train error (%)", "auc": "AUC"},
        paper="table2.csv",
        varied=("train.meta_steps", "train.meta_batch_size", "inner.epochs"),
        cell_order=DATASETS,
        names={
            "facescrub": "Facescrub",
            "notmnist": "NotMNIST",
            "mnist": "MNIST",
            "fashionmnist": "Fashion MNIST",
            "cifar10": "Cifar10",
            "svhn": "SVHN",
            "cifar100": "Cifar100",
            "gtsrb": "Traffic Signs",
        },
    ),
    "atari": Spec(
        "atari",
        "fig3",
        "game",
        "game",
        {"final_return": "final return", "mean_return": "mean return"},
        higher_is_better=True,
        varied=("train.meta_steps", "eval.frames"),
    ),
}


def _get(cfg, dotted: str):
    node = OmegaConf.select(cfg, dotted, default=None)
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def overridden(summary: dict) -> list[str]:
    """The dotted config keys a run's command set (paths aside): the keys a sweep or a user varied."""
    words = summary.get("command", "").split()
    keys = [w.split("=", 1)[0].lstrip("+") for w in words if "=" in w]
    return [k for k in keys if "." in k and not k.startswith("paths")]


def run_rows(
    folder: Path, base: Path, spec: Spec, known: dict[str, registry.MethodInfo], keys: list[str]
) -> list[dict]:
    """The runs.csv rows of one exported run (Atari: one per test game), with its config's value of every key in
    ``keys``."""
    s = json.loads((folder / "summary.json").read_text())
    cfg = OmegaConf.load(folder / "config.yaml") if (folder / "config.yaml").exists() else OmegaConf.create()
    m = registry.info(s["method"], known, s.get("label"), s.get("color"))
    row = {
        "experiment": s["experiment"],
        "scale": s.get("scale"),
        "method": s["method"],
        "label": m.label,
        "color": m.color,
        "cell": s.get("cell"),
        "num_pretrain": s.get("num_pretrain"),
        "seed": s["seed"],
        "split_seed": s.get("split_seed", _get(cfg, "data.split_seed")),  # older summaries: from the config
    }
    tail = {
        "val_best_step": (s.get("val_best") or {}).get("meta_step"),
        "meta_steps_done": s.get("meta_steps_done"),
        "stopped_early": s.get("stopped_early"),
        "mean_adapt_steps": s.get("mean_adapt_steps"),
        "wall_time_s": s.get("wall_time_s"),
        "commit": s.get("commit"),
        "command": s.get("command"),
        "run": folder.relative_to(base).as_posix(),
    }
    config = {k: _get(cfg, k) for k in keys}
    test = s["test"]
    if spec.experiment == "atari":
        episodes = (
            json.loads((folder / "curves.json").read_text()).get("episodes", {})
            if (folder / "curves.json").exists()
            else {}
        )
        return [
            row
            | {
                "game": game,
                "final_return": test["return_per_task"][k],  # mean return: every episode's
                "mean_return": float(np.mean([r for _, r in episodes[game]])) if episodes.get(game) else np.nan,
            }
            | tail
            | config
            for k, game in enumerate(test["tasks"])
        ]
    cell = {"heldout": s.get("cell")} if spec.cell == "heldout" else {}
    return [
        row
        | cell
        | {"test_error": test["error"], "auc": test["auc"], "train_error": test.get("train_error")}
        | tail
        | config
    ]


def runs_table(base: Path, spec: Spec, conf_dirs: tuple[Path, ...] = ()) -> pd.DataFrame:
    """Every finished exported run under ``base/runs`` as one tidy DataFrame, sorted; runs of another experiment
    are reported by name and left out."""
    known = registry.methods(*conf_dirs)
    found = []
    for p in sorted((base / "runs").rglob("summary.json")):
        s = json.loads(p.read_text())
        if s.get("status") != "finished" or "test" not in s:
            print(f"not in the {spec.experiment} table: {p.parent} (status {s.get('status')})", file=sys.stderr)
        elif s.get("experiment") != spec.experiment:
            print(f"not in the {spec.experiment} table: {p.parent} (a {s.get('experiment')} run)", file=sys.stderr)
        else:
            found.append((p.parent, s))
    keys = list(dict.fromkeys([*spec.varied, *(k for _, s in found for k in overridden(s))]))  # one set for all
    rows = [row for folder, _ in found for row in run_rows(folder, base, spec, known, keys)]
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS + [spec.cell, *spec.scores] + TAIL_COLUMNS)
    df = pd.DataFrame(rows)
    for c in COUNTS:  # counts stay integers beside gaps
        df[c] = df[c].astype("Int64")
    first = RUN_COLUMNS + ([spec.cell] if spec.cell not in RUN_COLUMNS else []) + list(spec.scores) + TAIL_COLUMNS
    return df[first + [c for c in df.columns if c not in first]].sort_values(
        ["method", spec.cell, "seed", "run"], kind="stable", ignore_index=True
    )


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """A CSV that rewrites to the same bytes: fixed column order, sorted rows, floats to 10 significant digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")


def read_runs(path: Path) -> pd.DataFrame:
    """A runs.csv as written (integer columns stay integers where a value is missing)."""
    return pd.read_csv(path, dtype=dict.fromkeys(COUNTS, "Int64"))


def method_order(df: pd.DataFrame, spec: Spec, root: Path) -> list[str]:
    """The reference, then the paper's methods (in its order), then every other method that ran, by name: none is
    dropped. A variant ``<method>-<tag>`` (a tagged run shown as its own arm) comes right after its method."""
    raw = _paper_csv(spec, root)
    if raw is None:
        first = []
    elif "method" in raw.columns:
        first = list(dict.fromkeys(raw["method"]))
    else:
        first = [c for c in raw.columns if c not in (spec.cell, "num_pretrain")]
    if spec.reference in set(df["method"]) and spec.reference not in first:
        first.insert(0, spec.reference)
    ran = set(df["method"])
    order = [m for m in first if m in ran] + sorted(ran - set(first))
    arms = {m for m in ran - set(first) if "-" in m and m.partition("-")[0] in order}
    out = [m for m in order if m not in arms]
    for arm in sorted(arms, reverse=True):  # inserted right after the method: variants of one method by name
        out.insert(out.index(arm.partition("-")[0]) + 1, arm)
    return out


def cell_order(df: pd.DataFrame, spec: Spec) -> list:
    values = list(dict.fromkeys(df[spec.cell]))
    if spec.cell_order:
        return [c for c in spec.cell_order if c in values] + [c for c in values if c not in spec.cell_order]
    return sorted(values) if all(isinstance(v, (int, np.integer)) for v in values) else values


def misfits(df: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Runs a table cannot place: a missing cell key or headline score, or a second run of the same method,
    cell and seed (the later by path is left out). Reported by name; so is a cell that averages runs of different
    configs (:func:`pooled`)."""
    if df.empty:
        return df
    pooled(df, spec)
    headline = next(iter(spec.scores))
    bad = df[spec.cell].isna() | df[headline].isna() | df.duplicated(["method", spec.cell, "seed"], keep="first")
    for run in df.loc[bad, "run"].drop_duplicates():
        print(
            f"not in the {spec.experiment} table: {run} (no {spec.cell} or {headline}, or a second run of its "
            "method, cell and seed)",
            file=sys.stderr,
        )
    return df[~bad]


SEED_KEYS = ("data.split_seed",)  # config keys that move with the seed: they differ within a cell by design


def pooled(df: pd.DataFrame, spec: Spec) -> None:
    """Warn, naming the runs, where one cell (method and cell key) holds runs that differ in a recorded config key
    or in scale: the table averages them as seeds of one config. A key a run's config lacks (an older run) does
    not count."""
    keys = ["scale"] + [c for c in df.columns if "." in c and c not in SEED_KEYS]
    for (cell, method), g in df.groupby([spec.cell, "method"], sort=False):
        for k in keys:
            values = sorted({str(v) for v in g[k] if v is not None and not (isinstance(v, float) and np.isnan(v))})
            if len(values) > 1:
                print(
                    f"warning: the {spec.experiment} table averages runs of {method} at {spec.cell}={cell} that "
                    f"differ in {k} ({', '.join(values)}): {', '.join(dict.fromkeys(g['run']))}. Keep one config per "
                    "results folder, or run the others with tag=<name> (--collect leaves tagged runs out).",
                    file=sys.stderr,
                )


def cell_stats(df: pd.DataFrame, spec: Spec, root: Path) -> pd.DataFrame:
    """One row per (cell, method): mean, sample std and count over seeds of every score, the paper's value beside."""
    g = df.groupby([spec.cell, "method"], sort=False)
    out = g.agg(
        label=("label", "first"),
        color=("color", "first"),
        n_seeds=("seed", "nunique"),
        **{f"{c}_{f}": (c, f) for c in spec.scores for f in ("mean", "std")},
    ).reset_index()
    for c in spec.scores:  # half-width of the 95 % Student-t interval of the mean over seeds
        n = out["n_seeds"].where(out["n_seeds"] > 1)
        out[f"{c}_ci95"] = stats.t.ppf(0.975, n - 1) * out[f"{c}_std"] / np.sqrt(n)
    paper = paper_table(spec, root)
    if paper is not None:
        out = out.merge(paper, on=[spec.cell, "method"], how="left")
    return _sorted(out, df, spec, root)


def _sorted(out: pd.DataFrame, df: pd.DataFrame, spec: Spec, root: Path) -> pd.DataFrame:
    cells, methods = cell_order(df, spec), method_order(df, spec, root)
    key = out[spec.cell].map({c: i for i, c in enumerate(cells)}) * 1000 + out["method"].map(
        {m: i for i, m in enumerate(methods)}
    )
    return out.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


def interval(d: np.ndarray) -> dict[str, float]:
    """Mean of paired differences with its 95 % Student-t interval, and a percentile bootstrap (fixed seed) from
    ``BOOTSTRAP_FROM`` pairs on; one pair gives the mean alone."""
    d = np.asarray(d, dtype=float)
    out = {
        "n_pairs": len(d),
        "diff_mean": float(d.mean()),
        "t_low": np.nan,
        "t_high": np.nan,
        "boot_low": np.nan,
        "boot_high": np.nan,
    }
    if len(d) >= 2:
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        out |= {"t_low": out["diff_mean"] - half, "t_high": out["diff_mean"] + half}
    if len(d) >= BOOTSTRAP_FROM:
        rng = np.random.default_rng(0)
        means = d[rng.integers(0, len(d), (BOOTSTRAP_SAMPLES, len(d)))].mean(axis=1)
        out |= {"boot_low": float(np.quantile(means, 0.025)), "boot_high": float(np.quantile(means, 0.975))}
    return out


def paired(df: pd.DataFrame, spec: Spec, root: Path) -> pd.DataFrame:
    """The reference method minus each other method, per cell and score, over the seeds both ran."""
    ref = df[df["method"] == spec.reference]
    rows = []
    for m in method_order(df, spec, root):
        if m == spec.reference:
            continue
        both = ref.merge(df[df["method"] == m], on=[spec.cell, "seed"], suffixes=("", "_other"))
        for cell, pairs in both.groupby(spec.cell, sort=False):
            for score in spec.scores:
                d = (pairs[score] - pairs[f"{score}_other"]).dropna().to_numpy()
                if len(d):
                    r = interval(d)
                    low, high = r["t_low"], r["t_high"]
                    rows.append(
                        {
                            spec.cell: cell,
                            "method": m,
                            "label": pairs["label_other"].iloc[0],
                            "score": score,
                            **r,
                            "excludes_zero": bool(len(d) >= 2 and (low > 0 or high < 0)),
                        }
                    )
    out = pd.DataFrame(
        rows,
        columns=[
            spec.cell,
            "method",
            "label",
            "score",
            "n_pairs",
            "diff_mean",
            "t_low",
            "t_high",
            "boot_low",
            "boot_high",
            "excludes_zero",
        ],
    )
    return _sorted(out, df, spec, root) if len(out) else out


def _paper_csv(spec: Spec, root: Path) -> pd.DataFrame | None:
    path = root / "paper" / spec.paper if spec.paper else None
    return pd.read_csv(path) if path is not None and path.exists() else None


def paper_table(spec: Spec, root: Path) -> pd.DataFrame | None:
    """The paper's numbers as long rows (cell, method, paper_<score>); None when the paper prints no table with
    this spec's rows."""
    p = _paper_csv(spec, root)
    if p is None or spec.cell not in p.columns:
        return None
    if "method" not in p.columns:  # wide (Table 1): one column per method, of the headline score
        p = p.melt(id_vars=[spec.cell], var_name="method", value_name=f"paper_{next(iter(spec.scores))}")
    else:  # long (Table 2): test, train, auc columns
        p = p.rename(columns={"test": "paper_test_error", "train": "paper_train_error", "auc": "paper_auc"})
    return p


def fmt_interval(r, digits: int = 1) -> str:
    """``+m [+lo, +hi]`` with ``*`` when the t-interval excludes zero (``+m`` alone for one pair)."""
    text = f"{r.diff_mean:+.{digits}f}"
    if r.n_pairs >= 2:
        text += f" [{r.t_low:+.{digits}f}, {r.t_high:+.{digits}f}]"
    if r.n_pairs >= BOOTSTRAP_FROM:
        text += f" (boot [{r.boot_low:+.{digits}f}, {r.boot_high:+.{digits}f}])"
    return text + ("*" if r.excludes_zero else "")


def markdown_cells(stats_: pd.DataFrame, spec: Spec, score: str, df: pd.DataFrame, root: Path, ci: bool = False) -> str:
    """A cell x method grid of ``mean ± std`` (``ci``: mean and its 95 % t-interval) for ``score``, the paper's
    value in parentheses where it has one; ``[k]`` marks a cell with fewer seeds than the most in the table."""
    most = int(stats_["n_seeds"].max())
    methods = method_order(df, spec, root)
    labels = stats_.drop_duplicates("method").set_index("method")["label"]
    grid: dict[tuple, dict] = {}
    for r in stats_.itertuples(index=False):
        r = r._asdict()
        mean, sd, half = r[score + "_mean"], r[score + "_std"], r[score + "_ci95"]
        spread = f" [{mean - half:.1f}, {mean + half:.1f}]" if ci else f" ± {sd:.1f}"
        text = f"{mean:.1f}" + (spread if r["n_seeds"] > 1 else "")
        if r["n_seeds"] < most:
            text += f" [{r['n_seeds']}]"
        paper = r.get(f"paper_{score}")
        if paper is not None and not pd.isna(paper):
            text += f" ({paper:.1f})"
        grid.setdefault(r[spec.cell], {})[r["method"]] = text
    cells = cell_order(df, spec)
    table = pd.DataFrame(
        [[spec.names.get(c, c)] + [grid.get(c, {}).get(m, "–") for m in methods] for c in cells],
        columns=[spec.cell_title] + [labels[m] for m in methods],
    )
    return table.to_markdown(index=False, disable_numparse=True)


def markdown_paired(pairs: pd.DataFrame, spec: Spec, scores: list[str], df: pd.DataFrame, root: Path) -> str:
    """A cell x method grid of the reference's paired differences (``score / score``)."""
    others = [m for m in method_order(df, spec, root) if m != spec.reference]
    labels = pairs.drop_duplicates("method").set_index("method")["label"]
    others = [m for m in others if m in labels.index]
    grid: dict = {}
    for r in pairs.itertuples(index=False):
        if r.score in scores:
            grid.setdefault((getattr(r, spec.cell), r.method), {})[r.score] = fmt_interval(r)
    rows = [
        [spec.names.get(c, c)] + [" / ".join(grid.get((c, m), {}).get(s, "–") for s in scores) for m in others]
        for c in cell_order(df, spec)
    ]
    return pd.DataFrame(rows, columns=[spec.cell_title] + [labels[m] for m in others]).to_markdown(
        index=False, disable_numparse=True
    )


def provenance_line(df: pd.DataFrame, command: str) -> str:
    seeds = sorted({int(s) for s in df["seed"]})
    commits = sorted({str(c)[:12] for c in df["commit"].dropna()})
    return (
        f"Generated by `{command}` from `runs.csv` ({df['run'].nunique()} runs, seeds {seeds}; "
        f"commit(s) {', '.join(commits)})."
    )
