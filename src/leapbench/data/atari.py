"""The Atari benchmark (paper Section 3 and Appendix F): games as tasks, a head pair per game.

Meta-training draws its task batches from ``pretrain`` games (by default the pool minus the held-out games);
``test`` lists the games Fig. 3 evaluates on: games seen in meta-training, held-out games, and games with
larger action spaces. Nothing is downloaded: ale-py ships the ROMs.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..rl.a2c import Game
from ..rl.atari import MAX_ACTIONS, action_counts, check_game


class AtariGames:
    """Pretraining and evaluation games; ``heads`` maps every game to its number of (minimal) actions."""

    provides: frozenset[str] = frozenset()  # every game has its own policy head (checks.NEEDS)

    def __init__(self, pool: list[str], heldout: list[str], test: list[str], pretrain: list[str] | None = None) -> None:
        if not test:
            raise ConfigError("data.test lists no games; name at least one game to test on (Fig. 3).")
        counts = action_counts()
        for key, games in (("pool", pool), ("heldout", heldout), ("test", test), ("pretrain", pretrain or [])):
            for game in games:
                check_game(game, f"data.{key}")
        wide = [g for g in pool if counts[g] > MAX_ACTIONS]
        if wide:
            raise ConfigError(
                f"data.pool holds games with more than {MAX_ACTIONS} actions ({', '.join(wide)}); "
                "the paper meta-trains on games with at most 10."
            )
        stray = [g for g in heldout if g not in pool]
        if stray:
            raise ConfigError(f"data.heldout games {stray} are not in data.pool.")
        pretrain = [g for g in pool if g not in heldout] if pretrain is None else list(pretrain)
        leak = sorted(set(pretrain) & set(heldout))
        if leak:
            raise ConfigError(f"Games {leak} are both held out and in meta-training; remove them from data.pretrain.")
        self.pretrain = [Game(g, i) for i, g in enumerate(pretrain)]
        self.val: list[Game] = []
        self.test = [Game(g, -1) for g in test]
        self.heldout = list(heldout)
        self.heads = {g: counts[g] for g in dict.fromkeys([*pretrain, *test])}

    @property
    def model_kwargs(self) -> dict:
        """One policy and value head per game, sized to its action set (the runner passes it to the model)."""
        return {"heads": dict(self.heads)}

    def to(self, device: object) -> None:
        """Nothing to move: games make their frames as they run (``protocols.Benchmark``)."""
