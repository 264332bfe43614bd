"""A2C on Atari: the task learning process of the paper's RL experiment (appendix F).

``A2C.train`` mirrors the supervised ``Inner.train``: a fresh optimizer per task, one update per step, and
meta-learners observe it through ``hook(step, loss, model)``, called after ``backward()`` and before the
optimizer step.

Frames: every env step advances ``frameskip`` (4) emulator frames in each of the ``num_envs`` envs, so one
update (``unroll`` steps) is ``num_envs * unroll * 4`` = 640 frames with the paper's settings. "Frames" here
always count emulator frames summed over the envs (the no-op frames of resets not included); this is the
usual Atari axis and what we read as the paper's "training steps".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from ..errors import ConfigError
from ..inner import LOWER_LR, DivergenceError, check_optimizer
from ..protocols import StepHook, ZeroGrad
from .atari import ENV_SETTINGS, check_game, make_env, to_tensor

FRAMESKIP = int(ENV_SETTINGS["frameskip"])  # type: ignore[call-overload]  # an int in a mixed settings dict


@dataclass(frozen=True)
class Game:
    """One Atari task: the game's ale-py ROM id ("pong"); its policy and value heads carry the same name."""

    name: str
    task_id: int = 0

    @property
    def head(self) -> str:
        return self.name


class ActorCritic(nn.Module):
    """The Mnih et al. (2013) encoder shared by one policy head and one value head per game.

    ``body`` (conv 16x8x8/4, ReLU, conv 32x4x4/2, ReLU, linear 256, ReLU) is what Leap meta-learns
    (scope ``"body."``); ``policy[game]`` and ``value[game]`` are linear layers on its 256 features.
    ``select(game)`` picks the heads ``forward`` uses. Inputs are uint8 images ``(N, C, 84, 84)``.
    """

    def __init__(self, heads: dict[str, int], in_channels: int = 3, channels_last: bool = True) -> None:
        super().__init__()
        if not heads:
            raise ConfigError("ActorCritic needs at least one game in heads (game name -> number of actions).")
        if in_channels < 1:
            raise ConfigError(f"model.in_channels={in_channels} must be at least 1.")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 9 * 9, 256),
            nn.ReLU(),
        )
        self.policy = nn.ModuleDict({game: nn.Linear(256, n) for game, n in heads.items()})
        self.value = nn.ModuleDict({game: nn.Linear(256, 1) for game in heads})
        self.active = next(iter(heads))
        self.channels_last = channels_last
        if channels_last:  # ~1.3x faster conv on CPU; the env's frames already come channels-last
            self.to(memory_format=torch.channels_last)

    def select(self, game: str) -> None:
        """Route ``forward`` through ``game``'s heads."""
        if game not in self.policy:
            raise KeyError(f"ActorCritic has no heads for game {game!r}; it has {', '.join(self.policy)}.")
        self.active = game

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Policy logits ``(N, actions)`` and state values ``(N,)`` of uint8 observations ``(N, C, H, W)``."""
        x = x.float().div_(255)  # keeps the input's strides: a channels-last view stays channels-last
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.body(x)
        return self.policy[self.active](h), self.value[self.active](h).squeeze(-1)


def nstep_returns(rewards: Tensor, dones: Tensor, bootstrap: Tensor, gamma: float) -> Tensor:
    """Discounted n-step returns ``(T, N)`` of an unroll, never bootstrapping across an episode end.

    ``rewards[t]`` and ``dones[t]`` (bool) come from the step taken at time t; ``bootstrap`` ``(N,)`` is the
    value of the observation after the last step. R_t = r_t + gamma * (1 - done_t) * R_{t+1}, R_T = bootstrap.
    """
    out = torch.empty_like(rewards)
    ret = bootstrap
    for t in reversed(range(len(rewards))):
        ret = rewards[t] + gamma * (~dones[t]).to(rewards.dtype) * ret
        out[t] = ret
    return out


def clip_rewards(rewards: np.ndarray, limit: float) -> np.ndarray:
    """The rewards the learner trains on: clipped to ``[-limit, limit]`` (scores stay unclipped)."""
    return np.clip(rewards, -limit, limit).astype(np.float32)


class EpisodeScores:
    """Running game scores of ``n`` envs; ``episodes`` lists (frames at the end, unclipped return) per episode."""

    def __init__(self, n: int) -> None:
        self.running = np.zeros(n)
        self.episodes: list[tuple[int, float]] = []

    def add(self, rewards: np.ndarray, ended: np.ndarray, frames: int) -> None:
        """Add one step's raw rewards; close the episodes that ``ended`` at ``frames``."""
        self.running += rewards
        for k in np.flatnonzero(ended):
            self.episodes.append((frames, float(self.running[k])))
            self.running[k] = 0.0


class A2C:
    """The A2C learning process on one game (synchronous advantage actor-critic, appendix F's settings).

    ``optimizer`` is a factory called on the model's parameters at the start of each task, e.g.
    ``partial(torch.optim.RMSprop, lr=1e-4, eps=1e-4, alpha=0.99)``. A task trains for ``updates``
    updates; each unrolls ``unroll`` steps in ``num_envs`` envs (one batch of ``num_envs * unroll``
    transitions), and its loss is policy-gradient loss + ``value_cost`` * mean squared error of the value
    - ``entropy_cost`` * policy entropy, with rewards clipped to ``[-reward_clip, reward_clip]``.

    After ``train``, ``last_episodes`` holds (frames, score) for every episode that ended (unclipped game
    score, frames as in the module docstring) and ``frames`` the number of frames played.
    """

    # Declarations (protocols.LearningProcess): observations, returns and the model meet on the CPU
    # (checks.validate refuses device=cuda); every task takes ``updates`` updates; no labelled batches;
    # RMSprop, not plain SGD.
    cpu_only = True
    provides = frozenset({"fixed_length"})
    sgd_lr = None

    def __init__(
        self,
        optimizer: Callable[..., Optimizer],
        updates: int,
        num_envs: int = 32,
        unroll: int = 5,
        gamma: float = 0.99,
        entropy_cost: float = 0.01,
        value_cost: float = 0.5,
        reward_clip: float = 5.0,
        max_grad_norm: float | None = None,
        env_threads: int = 1,
        episode_frames: int = 108_000,
    ) -> None:
        check_optimizer(optimizer, "inner.optimizer")
        for name, v in (
            ("updates", updates),
            ("num_envs", num_envs),
            ("unroll", unroll),
            ("env_threads", env_threads),
            ("episode_frames", episode_frames),
        ):
            if v < 1:
                raise ConfigError(f"inner.{name}={v} must be at least 1.")
        if not 0 <= gamma <= 1:
            raise ConfigError(f"inner.gamma={gamma} must be in [0, 1].")
        if not reward_clip > 0:
            raise ConfigError(f"inner.reward_clip={reward_clip} must be positive.")
        for name, cost in (("entropy_cost", entropy_cost), ("value_cost", value_cost)):
            if not 0 <= cost < math.inf:
                raise ConfigError(f"inner.{name}={cost} must be a finite number >= 0.")
        if max_grad_norm is not None and not 0 < max_grad_norm < math.inf:
            raise ConfigError(f"inner.max_grad_norm={max_grad_norm} must be a positive number (or null: no clipping).")
        self.optimizer, self.updates, self.num_envs, self.unroll = optimizer, updates, num_envs, unroll
        self.gamma, self.entropy_cost, self.value_cost = gamma, entropy_cost, value_cost
        self.reward_clip, self.max_grad_norm, self.env_threads = reward_clip, max_grad_norm, env_threads
        self.episode_frames = episode_frames  # emulator frames before an episode is truncated (30 min of play)
        self.last_episodes: list[tuple[int, float]] = []
        self.frames = 0

    @property
    def fixed_steps(self) -> int:
        """Every task takes ``updates`` updates."""
        return self.updates

    def steps_for(self, task: Game) -> int:
        return self.updates

    def make_env(self, game: str, seed: int):
        """The task's vector env (tests swap in a scripted one)."""
        return make_env(
            game, self.num_envs, seed, threads=self.env_threads, max_num_frames_per_episode=self.episode_frames
        )

    def train(
        self,
        model: ActorCritic,
        task: Game,
        generator: torch.Generator,
        *,
        steps: int | None = None,
        hook: StepHook | None = None,
        after_step: Callable[[int], bool] | None = None,
        zero_grad: ZeroGrad | None = None,
    ) -> list[float]:
        """Train ``model`` in place on ``task``; return each update's loss (the value ``hook`` receives).

        The env seed and the action sampling both come from ``generator``. ``after_step(i)`` runs after the
        i-th update and may return True to stop. Losses, not scores, are returned because an update's score
        is undefined until episodes end; the scores are in ``last_episodes``.
        """
        check_game(task.name)
        model.select(task.head)
        model.train()
        env_seed, action_seed = torch.randint(0, 2**31 - 1 - self.num_envs, (2,), generator=generator).tolist()
        sampler = torch.Generator().manual_seed(action_seed)
        scores = EpisodeScores(self.num_envs)
        self.last_episodes, self.frames = scores.episodes, 0
        env = self.make_env(task.name, env_seed)
        try:
            actions = env.single_action_space.n
            if model.policy[task.head].out_features != actions:
                raise ConfigError(
                    f"The policy head for {task.name!r} has {model.policy[task.head].out_features} "
                    f"outputs but the game has {actions} actions."
                )
            opt = self.optimizer(model.parameters())
            obs = to_tensor(env.reset()[0])
            losses: list[float] = []
            for i in range(steps or self.updates):
                loss, obs = self._unroll_loss(model, env, obs, sampler, scores)
                value = loss.item()
                if not math.isfinite(value):
                    raise DivergenceError(f"Non-finite loss ({value}) on game {task.name!r} at update {i}. {LOWER_LR}")
                if zero_grad is None:
                    opt.zero_grad(set_to_none=True)
                else:
                    zero_grad(i, value)
                loss.backward()
                losses.append(value)
                if hook is not None:
                    hook(i, value, model)
                if self.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
                opt.step()
                if after_step is not None and after_step(i):
                    break
            return losses
        finally:
            env.close()

    def _unroll_loss(
        self, model: ActorCritic, env, obs: Tensor, sampler: torch.Generator, scores: EpisodeScores
    ) -> tuple[Tensor, Tensor]:
        """Play ``unroll`` steps from ``obs``; return the A2C loss (its graph built on the way) and the next obs.

        The forward passes that pick the actions are the ones the loss backpropagates through, so no
        observation is run twice. With ``SameStep`` autoreset every step is a real transition; an episode
        end stops the return there, and a time-limit truncation bootstraps from the value of the episode's
        last observation (``info["final_obs"]``) instead of from the next episode.
        """
        logps, values, entropies, rewards, dones = [], [], [], [], []
        for _ in range(self.unroll):
            logits, value = model(obs)
            logp_all = F.log_softmax(logits, dim=1)
            action = torch.multinomial(logp_all.detach().exp(), 1, generator=sampler)
            logps.append(logp_all.gather(1, action).squeeze(1))
            entropies.append(-(logp_all.exp() * logp_all).sum(1))
            values.append(value)
            frame, reward, terminated, truncated, info = env.step(action.squeeze(1).numpy())
            self.frames += self.num_envs * FRAMESKIP
            ended = terminated | truncated
            scores.add(reward, ended, self.frames)
            learn = torch.from_numpy(clip_rewards(reward, self.reward_clip))
            cut = truncated & ~terminated
            if cut.any():
                with torch.no_grad():
                    final = model(to_tensor(info["final_obs"]))[1]
                learn += self.gamma * final * torch.from_numpy(cut)
            rewards.append(learn)
            dones.append(torch.from_numpy(ended))
            obs = to_tensor(frame)
        with torch.no_grad():
            bootstrap = model(obs)[1]
        values_t = torch.stack(values)
        returns = nstep_returns(torch.stack(rewards), torch.stack(dones), bootstrap, self.gamma)
        advantage = returns - values_t.detach()
        policy_loss = -(advantage * torch.stack(logps)).mean()
        value_loss = (returns - values_t).pow(2).mean()
        entropy = torch.stack(entropies).mean()
        return policy_loss + self.value_cost * value_loss - self.entropy_cost * entropy, obs


def moving_average(episodes: list[tuple[int, float]], window: int, marks: list[int]) -> list[float]:
    """At each frame count in ``marks``: the mean return of the last ``window`` episodes ended by then (NaN before
    any)."""
    frames = np.array([f for f, _ in episodes], dtype=np.int64)
    returns = np.array([r for _, r in episodes], dtype=np.float64)
    out = []
    for mark in marks:
        n = int(np.searchsorted(frames, mark, side="right"))
        out.append(float(returns[max(0, n - window) : n].mean()) if n else float("nan"))
    return out


@dataclass
class Training:
    """How an initialization is evaluated on a game (Fig. 3): train it with A2C for ``frames`` frames.

    ``evaluation.evaluate`` calls ``run`` per test game. Per game it reports ``return``, the mean unclipped
    score of the last ``window`` episodes (the paper's moving average over 100 episodes, at the end), and
    ``mean_return`` over every episode (higher: faster learning, the analogue of a low AUC); ``episodes``
    lists (frames, score) for Fig. 3 and ``curve`` the moving average at ``points`` evenly spaced frame counts.
    """

    scores = ("return", "mean_return")
    batched = False  # games train one after another

    frames: int = 10_000_000
    window: int = 100
    points: int = 100

    def __post_init__(self) -> None:
        for key in ("frames", "window", "points"):  # named within the group (eval or val): checks.validate
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least 1.")

    def run(self, model: ActorCritic, task: Game, inner: A2C, generator: torch.Generator, monitor=None) -> dict:
        per_update = inner.num_envs * inner.unroll * FRAMESKIP
        updates = max(1, math.ceil(self.frames / per_update))
        every = max(1, updates // self.points)

        def report(i: int) -> bool:  # every 1/points of the game's frames: frames so far and the moving average
            if monitor is not None and ((i + 1) % every == 0 or i + 1 == updates):
                recent = [r for _, r in inner.last_episodes[-self.window :]]
                monitor(task.name, inner.frames, updates * per_update, float(np.mean(recent)) if recent else None)
            return False

        losses = inner.train(model, task, generator, steps=updates, after_step=report)
        episodes, played = list(inner.last_episodes), inner.frames
        returns = [r for _, r in episodes]
        marks = [round(played * (k + 1) / self.points) for k in range(self.points)]
        return {
            "name": task.name,
            "return": float(np.mean(returns[-self.window :])) if returns else float("nan"),
            "mean_return": float(np.mean(returns)) if returns else float("nan"),
            "episodes_done": len(episodes),
            "steps": len(losses),
            "frames": played,
            "marks": marks,
            "curve": moving_average(episodes, self.window, marks),
            "episodes": [[f, r] for f, r in episodes],
        }
