"""The Atari experiment end to end: configs, games as tasks, Leap's encoder meta-gradient from A2C, runs, Fig. 3."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import pandas as pd
import pytest
import torch
from conftest import ROOT, make_cfg, notebook_outputs, script

from leapbench.checks import build, method_node
from leapbench.data.atari import AtariGames
from leapbench.errors import ConfigError
from leapbench.methods.base import task_seeds
from leapbench.methods.flat import flat_grads, flat_params
from leapbench.methods.leap import Leap
from leapbench.rl.a2c import A2C, ActorCritic, Game
from leapbench.rl.atari import action_counts
from leapbench.runner import run

METHODS = ["leap", "reptile", "scratch"]
SMOKE = ("experiment=atari", "scale=smoke")


@pytest.mark.parametrize("scale", ["paper", "small", "smoke"])
@pytest.mark.parametrize("method", METHODS)
def test_config_composes(method, scale, tmp_path):
    cfg = make_cfg("experiment=atari", f"method={method}", f"scale={scale}", tmp_path=tmp_path)
    assert cfg.run_dir.endswith(f"atari/{method}/{scale}/fig3-s0")
    data, inner, learner = build(cfg.data), build(cfg.inner), build(method_node(cfg))
    model = build(cfg.model, **data.model_kwargs)
    learner.setup(model, inner, len(data.pretrain))
    build(cfg.eval)
    assert {t.name for t in data.pretrain}.isdisjoint(data.heldout)
    assert all(model.policy[g].out_features == n for g, n in data.heads.items())
    if scale == "paper":  # Appendix F
        o = cfg.inner.optimizer
        assert (o._target_, o.lr, o.eps, o.alpha) == ("torch.optim.RMSprop", 1e-4, 1e-4, 0.99)
        assert (inner.num_envs, inner.unroll, inner.gamma, inner.entropy_cost, inner.reward_clip) == (
            32,
            5,
            0.99,
            0.01,
            5.0,
        )
        assert len(data.pretrain) == 22 and len(cfg.data.pool) == 25 and cfg.train.meta_steps == 100
        assert inner.updates * 32 * 5 * 4 >= 1_000_000  # a million frames per task
        assert max(action_counts()[g] for g in cfg.data.pool) <= 10
        assert {"pong", "breakout", "space_invaders", "kung_fu_master"} <= set(cfg.data.test)
    if method in ("leap", "reptile"):
        meta = {id(q) for q in learner.params}
        assert learner.scope == "body." and meta == {id(q) for q in model.body.parameters()}


@pytest.mark.parametrize(
    "override, match",
    [
        ("data.test=[pongg]", "pongg"),
        ("data.heldout=[qbert]", "not in data.pool"),
        ("data.pretrain=[breakout]", "both held out"),
        ("data.pool=[pong,alien]", "more than 10 actions"),
    ],
)
def test_bad_games_are_config_errors(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        build(make_cfg(*SMOKE, override, tmp_path=tmp_path).data)


def test_cli_unknown_game_exits_2_naming_it(tmp_path):
    out = subprocess.run(
        [sys.executable, "run.py", *SMOKE, "data.test=[space_invader]", f"paths.runs={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "space_invader" in out.stderr and "space_invaders" in out.stderr
    assert "Traceback" not in out.stderr and not any(tmp_path.rglob("summary.json"))


@pytest.mark.parametrize("loss", [False, True])
def test_leap_encoder_meta_gradient_from_a2c_equals_stored_trajectory(loss):
    """The supervised path's accumulator, fed by the RL inner loop, equals eq. 8 computed afterwards from the
    stored encoder trajectory (psi^i, f_i, g_i) of the same A2C learning processes on real Pong."""
    inner = A2C(partial(torch.optim.RMSprop, lr=1e-3, eps=1e-4, alpha=0.99), updates=4, num_envs=2, episode_frames=200)
    tasks = [Game("pong", 0), Game("breakout", 1)]

    def agent() -> ActorCritic:
        torch.manual_seed(0)
        return ActorCritic({"pong": 6, "breakout": 4})

    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1), loss=loss, scope="body.")
    leap.setup(agent(), inner, len(tasks))
    theta0 = flat_params(leap.params)
    heads0 = {k: v.clone() for k, v in leap.model.state_dict().items() if not k.startswith("body.")}
    leap.meta_step(tasks, torch.Generator().manual_seed(3))

    seeds, ref = task_seeds(len(tasks), torch.Generator().manual_seed(3)), torch.zeros_like(theta0)
    for task, seed in zip(tasks, seeds):
        model, traj = agent(), []
        body = list(model.body.parameters())
        inner.train(
            model,
            task,
            torch.Generator().manual_seed(seed),
            hook=lambda i, f, m: traj.append((flat_params(body), f, flat_grads(body))),
        )
        assert len(traj) == 4
        for (p0, f0, g0), (p1, f1, _) in zip(traj, traj[1:]):
            dp, df = p1 - p0, (-abs(f1 - f0) if loss else 0.0)
            ref += (-dp - df * g0) / torch.sqrt(dp @ dp + df**2)
    torch.testing.assert_close(flat_params(leap.params), theta0 - 0.1 * ref / len(tasks), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(leap.model.state_dict()[k], v) for k, v in heads0.items())  # heads are not meta-learned


def test_games_as_tasks():
    data = AtariGames(pool=["pong", "freeway", "breakout"], heldout=["breakout"], test=["pong", "breakout", "alien"])
    assert [t.name for t in data.pretrain] == ["pong", "freeway"] and [t.task_id for t in data.pretrain] == [0, 1]
    assert [t.name for t in data.test] == ["pong", "breakout", "alien"] and data.val == []
    assert data.model_kwargs == {"heads": {"pong": 6, "freeway": 3, "breakout": 4, "alien": 18}}


# ----------------------------------------------------------------------------------------------- runs, Fig. 3
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atari")
    for method in METHODS:
        run(make_cfg(*SMOKE, f"method={method}", tmp_path=tmp))
    run(make_cfg(*SMOKE, "method=leap", "seed=1", tmp_path=tmp))
    return tmp / "runs"


@pytest.mark.slow
def test_smoke_run_of_every_method(runs):
    for method in METHODS:
        d = runs / "atari" / method / "smoke" / "fig3-s0"
        s = json.loads((d / "summary.json").read_text())
        assert s["status"] == "finished" and s["test"]["tasks"] == ["pong", "breakout"]
        ev = json.loads((d / "eval_test.json").read_text())
        for game in ev["tasks"]:  # 800 frames, 200-frame episodes, 4 envs: every env finishes an episode
            assert game["frames"] >= 800 and game["episodes_done"] >= 4
            scores = [r for _, r in game["episodes"]]
            assert game["return"] == pytest.approx(sum(scores[-5:]) / len(scores[-5:]))
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        if method != "scratch":
            assert [r["meta_step"] for r in rows if r["split"] == "train"] == [1, 2]
        for game in ("pong", "breakout"):  # the test training streamed its progress while it ran
            progress = [r for r in rows if r["split"] == f"test_progress/{game}"]
            assert progress and [r["frames"] for r in progress] == sorted({r["frames"] for r in progress})
            assert progress[-1]["frames"] == next(g for g in ev["tasks"] if g["name"] == game)["frames"]
    # Same seed: Leap and scratch start from the same random encoder, so the comparison is paired.
    a = torch.load(runs / "atari" / "scratch" / "smoke" / "fig3-s0" / "init.pt")
    b = torch.load(runs / "atari" / "leap" / "smoke" / "fig3-s0" / "init.pt")
    assert a.keys() == b.keys() and not torch.equal(a["body.0.weight"], b["body.0.weight"])
    assert torch.equal(a["policy.pong.weight"], b["policy.pong.weight"])


@pytest.mark.slow
def test_fig3_script_and_notebook(runs, tmp_path, monkeypatch):
    results = tmp_path / "results"
    script("scripts/make_figure_atari.py", "--scale", "smoke", "--collect", str(runs), "--results", str(results))
    base = results / "atari" / "smoke"
    assert len(list(base.glob("runs/*/*/summary.json"))) == 4
    curves = json.loads((base / "runs" / "leap" / "fig3-s0" / "curves.json").read_text())
    assert set(curves["episodes"]) == {"pong", "breakout"}
    cells = pd.read_csv(base / "fig3.csv").set_index(["game", "method"])
    assert cells.loc[("breakout", "leap"), "n_seeds"] == 2 and cells.loc[("pong", "scratch"), "n_seeds"] == 1
    runs_csv = pd.read_csv(base / "runs.csv")  # one row per run and test game
    assert len(runs_csv) == 8 and set(runs_csv["game"]) == {"pong", "breakout"}
    table = (base / "fig3.md").read_text()
    assert "| breakout " in table and "Mean return over all of training" in table and "t-interval" in table
    for ext in ("png", "pdf"):
        assert (base / "figures" / f"fig3.{ext}").stat().st_size > 1000
    before = {p: p.read_bytes() for p in base.rglob("*") if p.is_file()}
    script("scripts/make_figure_atari.py", "--scale", "smoke", "--results", str(results))
    assert {p: p.read_bytes() for p in base.rglob("*") if p.is_file()} == before  # a rerun rewrites the same bytes
    outputs = notebook_outputs("atari_fig3.ipynb", results, "smoke", monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("| breakout " in o.get("data", {}).get("text/markdown", "") for o in outputs)
