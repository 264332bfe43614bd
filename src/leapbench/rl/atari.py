"""The Atari games of the paper's RL experiment, on ale-py's vectorised emulator (``AtariVectorEnv``).

Observation layout (ale-py 0.12.1): ``AtariVectorEnv`` returns uint8 arrays of shape ``(N, stack, H, W)`` in
grayscale and ``(N, stack, H, W, 3)`` in RGB, i.e. channels last; :func:`to_tensor` turns the RGB batch into
a ``(N, 3, H, W)`` tensor view with channels-last strides (no copy), which is what a channels-last conv
net wants.

Autoreset: the default mode, ``NextStep``, spends the step after an episode end on the reset (the action
is ignored, the reward is 0 and the observation jumps from the last frame to the new episode's first), a
transition that must not be trained on. :func:`make_env` uses ``SameStep`` instead: the step that ends an
episode already returns the first observation of the next episode, the ended episode's last observation
is in ``info["final_obs"]`` (the whole batch, read the rows that ended), and every step is a real transition.
"""

from __future__ import annotations

import difflib
import re

import ale_py
import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

# Size of the minimal action set of every ROM shipped in ale-py 0.12.1, computed once with
#   for rom in ale_py.roms.get_all_rom_ids():
#       ale = ale_py.ALEInterface(); ale.loadROM(ale_py.roms.get_rom_path(rom))
#       counts[rom] = len(ale.getMinimalActionSet())
# (about 4 s; tests/test_atari.py checks entries against ale-py). Stored because four shipped ROMs
# (UNLOADABLE) do not load: ALE rejects their MD5 and exits the whole Python process.
_ACTION_COUNTS: dict[str, int] = {
    "adventure": 18,
    "air_raid": 6,
    "alien": 18,
    "amidar": 10,
    "assault": 7,
    "asterix": 9,
    "asteroids": 14,
    "atlantis2": 4,
    "atlantis": 4,
    "backgammon": 3,
    "bank_heist": 18,
    "basic_math": 6,
    "battle_zone": 18,
    "beam_rider": 9,
    "berzerk": 18,
    "blackjack": 4,
    "bowling": 6,
    "boxing": 18,
    "breakout": 4,
    "carnival": 6,
    "casino": 4,
    "centipede": 18,
    "chopper_command": 18,
    "crazy_climber": 9,
    "crossbow": 18,
    "darkchambers": 18,
    "defender": 18,
    "demon_attack": 6,
    "donkey_kong": 18,
    "double_dunk": 18,
    "earthworld": 18,
    "elevator_action": 18,
    "enduro": 9,
    "entombed": 18,
    "et": 18,
    "fishing_derby": 18,
    "flag_capture": 18,
    "freeway": 3,
    "frogger": 5,
    "frostbite": 18,
    "galaxian": 6,
    "gopher": 8,
    "gravitar": 18,
    "hangman": 18,
    "haunted_house": 18,
    "hero": 18,
    "human_cannonball": 18,
    "ice_hockey": 18,
    "jamesbond": 18,
    "journey_escape": 16,
    "kaboom": 4,
    "kangaroo": 18,
    "keystone_kapers": 14,
    "king_kong": 6,
    "klax": 18,
    "koolaid": 9,
    "krull": 18,
    "kung_fu_master": 14,
    "laser_gates": 18,
    "lost_luggage": 9,
    "mario_bros": 18,
    "miniature_golf": 18,
    "montezuma_revenge": 18,
    "mr_do": 10,
    "ms_pacman": 9,
    "name_this_game": 6,
    "othello": 10,
    "pacman": 5,
    "phoenix": 8,
    "pitfall2": 18,
    "pitfall": 18,
    "pong": 6,
    "pooyan": 6,
    "private_eye": 18,
    "qbert": 6,
    "riverraid": 18,
    "road_runner": 18,
    "robotank": 18,
    "seaquest": 18,
    "sir_lancelot": 6,
    "skiing": 3,
    "solaris": 18,
    "space_invaders": 6,
    "space_war": 18,
    "star_gunner": 18,
    "superman": 18,
    "surround": 5,
    "tennis": 18,
    "tetris": 5,
    "tic_tac_toe_3d": 10,
    "time_pilot": 10,
    "trondead": 18,
    "turmoil": 12,
    "tutankham": 8,
    "up_n_down": 6,
    "venture": 18,
    "video_checkers": 5,
    "video_chess": 10,
    "video_cube": 18,
    "video_pinball": 9,
    "wizard_of_wor": 10,
    "word_zapper": 18,
    "yars_revenge": 18,
    "zaxxon": 18,
}
UNLOADABLE = ("combat", "joust", "maze_craze", "warlords")  # shipped, but loadROM exits the process

MAX_ACTIONS = 10  # the paper meta-trains on the games with at most 10 actions
POOL: list[str] = sorted(g for g, n in _ACTION_COUNTS.items() if n <= MAX_ACTIONS)

# The emulator settings of every env (documented in make_env).
ENV_SETTINGS = dict(
    img_height=84,
    img_width=84,
    grayscale=False,
    stack_num=1,  # 84x84x3 RGB, one frame (paper, appendix F)
    frameskip=4,
    maxpool=True,  # each action repeats 4 frames; max over the last two against flicker
    full_action_space=False,  # the minimal action set
    repeat_action_probability=0.0,  # no sticky actions (the DQN/A3C protocol of the time)
    noop_max=30,  # 0-30 random no-ops at each reset: the only randomness in a game start
    max_num_frames_per_episode=108_000,  # 30 minutes of play (counted in emulator frames), then truncation
    episodic_life=False,
    life_loss_info=False,  # an episode is a whole game: returns are game scores
    use_fire_reset=False,  # the agent presses FIRE itself (FIRE is in the minimal set where needed)
    reward_clipping=False,  # raw scores; the learner clips a copy for its updates
    autoreset_mode="SameStep",  # see the module docstring
)


def action_counts() -> dict[str, int]:
    """The size of the minimal action set of every loadable ROM shipped in ale-py, by ROM id ("pong")."""
    return dict(_ACTION_COUNTS)


def check_game(name: str, key: str = "game") -> str:
    """Return ``name`` if it is a loadable ale-py ROM id; otherwise raise a ConfigError naming ``key`` (the
    config key that holds it) and close matches."""
    if name in _ACTION_COUNTS:
        return name
    if name in UNLOADABLE:
        raise ConfigError(
            f"{key}: Atari game {name!r} ships with ale-py but its ROM does not load (MD5 rejected). "
            "Choose another game."
        )
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("-", "_")  # SpaceInvaders -> space_invaders
    close = difflib.get_close_matches(snake, _ACTION_COUNTS, n=5, cutoff=0.6)
    hint = f"Did you mean {', '.join(close)}?" if close else f"Valid names: {', '.join(sorted(_ACTION_COUNTS))}."
    raise ConfigError(
        f'{key}: unknown Atari game {name!r}; use ale-py\'s snake_case ROM ids ("space_invaders", '
        f'not "SpaceInvaders"). {hint}'
    )


class SeededAtariVectorEnv(ale_py.AtariVectorEnv):
    """An ``AtariVectorEnv`` whose first ``reset()`` without a seed uses the seed it was made with.

    A seeded reset reloads every emulator (~0.15 s per env here), so the seed is applied once, by the reset
    that starts training, rather than by an extra reset in ``make_env``.
    """

    def __init__(self, game: str, num_envs: int, *, seed: int, **kwargs) -> None:
        super().__init__(game, num_envs, **kwargs)
        self.pending_seed: int | None = seed

    def reset(self, *, seed=None, options=None):
        seed = self.pending_seed if seed is None else seed
        self.pending_seed = None
        return super().reset(seed=seed, options=options)


def make_env(game: str, num_envs: int, seed: int, threads: int = 1, **overrides) -> SeededAtariVectorEnv:
    """``num_envs`` copies of ``game`` stepped in C++ by ``threads`` threads, with ``ENV_SETTINGS``.

    Settings: 84x84 RGB frames without frame stacking (the paper's input), frame skip 4 with max-pooling
    of the last two frames, the minimal action set, no sticky actions (repeat_action_probability 0) and
    0-30 no-ops after each reset, episodes of at most 108,000 frames (truncated, not terminated), one
    episode per game rather than per life, unclipped rewards, no automatic FIRE on reset, and ``SameStep``
    autoreset. ``overrides`` replace settings (e.g. ``repeat_action_probability=0.25``).

    The first ``reset()`` seeds sub-env ``k`` with ``seed + k``, so everything the env does depends on
    ``seed`` only (unseeded, ALE draws its seeds from the system). Making the env costs ~0.15 s per env
    and the seeded reset as much again (about 10 s for 32 envs on the project's CPUs).
    """
    check_game(game)
    if num_envs < 1 or threads < 1:
        raise ConfigError(f"num_envs={num_envs} and threads={threads} must be at least 1.")
    return SeededAtariVectorEnv(game, num_envs, seed=seed, num_threads=threads, **(ENV_SETTINGS | overrides))


def to_tensor(obs: np.ndarray) -> Tensor:
    """An env's RGB batch ``(N, 1, H, W, 3)`` as a uint8 ``(N, 3, H, W)`` channels-last view of the same memory."""
    return torch.from_numpy(obs).squeeze(1).permute(0, 3, 1, 2)
