"""The Atari environment and the A2C learning process (real ALE ROMs shipped in ale-py; no network)."""

from __future__ import annotations

from functools import partial

import ale_py
import numpy as np
import pytest
import torch
from gymnasium.spaces import Discrete

from leapbench.errors import ConfigError
from leapbench.rl import a2c as a2c_module
from leapbench.rl.a2c import A2C, ActorCritic, EpisodeScores, Game, clip_rewards, moving_average, nstep_returns
from leapbench.rl.atari import POOL, UNLOADABLE, action_counts, check_game, make_env, to_tensor

torch.set_num_threads(1)
RMSPROP = partial(torch.optim.RMSprop, lr=1e-4, eps=1e-4, alpha=0.99)


# -- games and env ---------------------------------------------------------------------------------------


def test_action_counts_match_ale():
    counts = action_counts()
    assert set(counts) | set(UNLOADABLE) == set(ale_py.roms.get_all_rom_ids())
    for game in ("pong", "breakout", "space_invaders", "kung_fu_master", "ms_pacman"):
        ale = ale_py.ALEInterface()
        ale.setLoggerMode(ale_py.LoggerMode.Error)
        ale.loadROM(ale_py.roms.get_rom_path(game))
        assert counts[game] == len(ale.getMinimalActionSet()), game
    assert (counts["pong"], counts["breakout"], counts["space_invaders"], counts["kung_fu_master"]) == (6, 4, 6, 14)


def test_pool():
    assert POOL == sorted(POOL) and all(action_counts()[g] <= 10 for g in POOL)
    assert {"pong", "breakout", "space_invaders"} <= set(POOL) and "kung_fu_master" not in POOL


def test_unknown_game_is_a_config_error():
    with pytest.raises(ConfigError, match="'SpaceInvaders'.*space_invaders"):
        check_game("SpaceInvaders")
    with pytest.raises(ConfigError, match="'combat'"):  # shipped, but loading it would exit the process
        make_env("combat", 1, seed=0)
    with pytest.raises(ConfigError, match="'pongg'.*pong"):
        A2C(RMSPROP, updates=1, num_envs=1).train(ActorCritic({"pongg": 6}), Game("pongg"), torch.Generator())


def test_env_gives_84x84_rgb_uint8_and_is_seeded():
    envs = [make_env("pong", 2, seed=3) for _ in range(2)]
    try:
        obs = [env.reset()[0] for env in envs]
        assert obs[0].shape == (2, 1, 84, 84, 3) and obs[0].dtype == np.uint8
        assert envs[0].single_action_space == Discrete(6)
        x = to_tensor(obs[0])
        assert x.shape == (2, 3, 84, 84) and x.dtype == torch.uint8
        assert x.is_contiguous(memory_format=torch.channels_last)
        for _ in range(10):
            obs = [env.step(np.array([2, 3]))[0] for env in envs]
        assert np.array_equal(obs[0], obs[1]) and obs[0].std() > 0  # same seed, same game; not a blank frame
    finally:
        for env in envs:
            env.close()


# -- network ---------------------------------------------------------------------------------------------


def test_actor_critic_shapes_and_heads():
    model = ActorCritic({"pong": 6, "breakout": 4})
    x = torch.randint(0, 256, (5, 3, 84, 84), dtype=torch.uint8)
    logits, value = model(x)
    assert logits.shape == (5, 6) and value.shape == (5,)
    model.select("breakout")
    assert model(x)[0].shape == (5, 4)
    with pytest.raises(KeyError, match="space_invaders"):
        model.select("space_invaders")
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"body", "policy", "value"}
    assert sum(p.numel() for p in model.body.parameters()) == (3 * 64 * 16 + 16) + (16 * 16 * 32 + 32) + (
        2592 * 256 + 256
    )


# -- pure pieces of the update ---------------------------------------------------------------------------


def test_nstep_returns_stop_at_episode_ends():
    g = 0.5
    rewards = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    dones = torch.tensor([[False, False], [True, False], [False, True]])
    bootstrap = torch.tensor([10.0, 10.0])
    # env 0: the episode ends at t=1, so t=0 and t=1 never see t=2 or the bootstrap; t=2 bootstraps.
    # env 1: ends at t=2, so nothing bootstraps.
    expected = torch.tensor([[1 + g * 2, 0 + g * (1 + g * 0)], [2.0, 1 + g * 0], [3 + g * 10, 0.0]])
    assert torch.allclose(nstep_returns(rewards, dones, bootstrap, g), expected)


def test_moving_average_at_frame_marks():
    """Fig. 3's curve: at each mark, the mean of the last `window` episodes ended by then; two may end at once."""
    episodes = [(10, 1.0), (20, 3.0), (20, 5.0), (40, -2.0)]
    got = moving_average(episodes, 2, [5, 10, 20, 30, 40])
    assert np.isnan(got[0])
    assert got[1:] == [1.0, 4.0, 4.0, 1.5]


def test_rewards_clipped_for_learning_but_scores_unclipped():
    r = np.array([100, -7, 3], dtype=np.int32)
    assert clip_rewards(r, 5.0).tolist() == [5.0, -5.0, 3.0]
    scores = EpisodeScores(3)
    scores.add(r, np.array([False, False, False]), frames=12)
    scores.add(r, np.array([True, False, True]), frames=24)
    assert scores.episodes == [(24, 200.0), (24, 6.0)]


# -- the learning loop on a scripted env -----------------------------------------------------------------


class ScriptedEnv:
    """Two envs with reward 10 every step: env 0 terminates every 3 steps, env 1 is truncated every 4."""

    single_action_space = Discrete(3)

    def __init__(self) -> None:
        self.t, self.closed = 0, False
        self.rng = np.random.default_rng(0)

    def _obs(self) -> np.ndarray:
        return self.rng.integers(0, 256, (2, 1, 84, 84, 3), dtype=np.uint8)

    def reset(self, seed=None, options=None):
        return self._obs(), {}

    def step(self, actions):
        assert actions.shape == (2,) and actions.max() < 3
        self.t += 1
        term = np.array([self.t % 3 == 0, False])
        trunc = np.array([False, self.t % 4 == 0])
        info = {"final_obs": self._obs()} if (term | trunc).any() else {}
        return self._obs(), np.full(2, 10, dtype=np.int32), term, trunc, info

    def close(self):
        self.closed = True


def scripted_a2c(monkeypatch, updates: int) -> tuple[A2C, ScriptedEnv, list]:
    """An A2C on ScriptedEnv; the third item collects the (rewards, dones) each update learns from."""
    a2c, env, seen = A2C(RMSPROP, updates=updates, num_envs=2, unroll=5), ScriptedEnv(), []
    monkeypatch.setattr(a2c, "make_env", lambda game, seed: env)

    def spy(rewards, dones, bootstrap, gamma):
        seen.append((rewards.clone(), dones.clone()))
        return nstep_returns(rewards, dones, bootstrap, gamma)

    monkeypatch.setattr(a2c_module, "nstep_returns", spy)
    return a2c, env, seen


def test_episode_ends_scores_and_learning_rewards(monkeypatch):
    a2c, env, seen = scripted_a2c(monkeypatch, updates=3)
    losses = a2c.train(ActorCritic({"pong": 3}), Game("pong"), torch.Generator().manual_seed(0))
    assert len(losses) == 3 and all(np.isfinite(losses)) and env.closed
    # 15 steps of 2 envs x 4 frames; env 0 ends at steps 3, 6, ..., env 1 at 4, 8, 12; scores unclipped
    assert a2c.frames == 15 * 8
    assert a2c.last_episodes == [
        (24, 30.0),
        (32, 40.0),
        (48, 30.0),
        (64, 40.0),
        (72, 30.0),
        (96, 30.0),
        (96, 40.0),
        (120, 30.0),
    ]
    rewards, dones = (torch.cat(x) for x in zip(*seen))
    assert dones[:, 0].tolist() == [t % 3 == 0 for t in range(1, 16)]
    assert dones[:, 1].tolist() == [t % 4 == 0 for t in range(1, 16)]
    assert (rewards[:, 0] == 5.0).all()  # clipped for learning
    cut = dones[:, 1]
    assert (rewards[~cut, 1] == 5.0).all() and (rewards[cut, 1] != 5.0).all()  # truncation bootstraps from final_obs


def test_hook_after_backward_before_step(monkeypatch):
    a2c, _, _ = scripted_a2c(monkeypatch, updates=4)
    model = ActorCritic({"pong": 3})
    flat = lambda: torch.cat([p.detach().flatten() for p in model.parameters()])  # noqa: E731
    state = {"before": flat(), "hooks": [], "steps": []}

    def hook(step, loss, m):
        assert m is model and np.isfinite(loss)
        assert torch.equal(flat(), state["before"])  # the optimizer has not stepped yet
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.body.parameters())
        state["hooks"].append(step)
        state["at_hook"] = flat()

    def after_step(i):
        assert not torch.equal(flat(), state["at_hook"])  # ... and has now
        state["before"] = flat()
        state["steps"].append(i)
        return i == 2

    losses = a2c.train(model, Game("pong"), torch.Generator().manual_seed(0), hook=hook, after_step=after_step)
    assert state["hooks"] == state["steps"] == [0, 1, 2] and len(losses) == 3


# -- the real game ---------------------------------------------------------------------------------------


def test_a2c_on_real_pong_records_returns(monkeypatch):
    a2c = A2C(RMSPROP, updates=10, num_envs=4, unroll=5)
    # 100-frame episodes, so that 200 frames per env end some (Pong's own last thousands of frames)
    monkeypatch.setattr(a2c, "make_env", lambda game, seed: make_env(game, 4, seed, max_num_frames_per_episode=100))
    model = ActorCritic({"pong": 6, "breakout": 4})
    body = [p.detach().clone() for p in model.body.parameters()]
    losses = a2c.train(model, Game("pong"), torch.Generator().manual_seed(0))
    assert len(losses) == 10 and all(np.isfinite(losses))
    assert a2c.frames == 10 * 5 * 4 * 4
    assert len(a2c.last_episodes) >= 4 and all(f <= a2c.frames and -21 <= r <= 21 for f, r in a2c.last_episodes)
    assert any(not torch.equal(a, b) for a, b in zip(body, model.body.parameters()))
    assert model.active == "pong"


def test_leap_meta_step_on_the_encoder(monkeypatch):
    """A2C plugs into the meta-learners as ``inner``; Leap on scope "body." moves only the encoder."""
    from leapbench.methods.leap import Leap

    a2c, _, _ = scripted_a2c(monkeypatch, updates=3)
    monkeypatch.setattr(a2c, "make_env", lambda game, seed: ScriptedEnv())
    model = ActorCritic({"pong": 3, "breakout": 3})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1), scope="body.")
    leap.setup(model, a2c, num_tasks=2)
    out = leap.meta_step([Game("pong"), Game("breakout", task_id=1)], torch.Generator().manual_seed(0))
    assert np.isfinite(out["loss"])
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n in before if n.startswith("body.")}
