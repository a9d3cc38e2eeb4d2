"""Training callbacks for any Stable-Baselines3 algorithm (MemoryPPO, PPO, sb3-contrib's RecurrentPPO, ...).

:class:`DecayLROnSuccess` keeps the learning rate until the agent has solved its task, then decays it. On the T-Maze
and MiniGrid-Memory our KV-based agents sometimes solve the task at a constant learning rate and then collapse to
chance within one or two updates; decaying the rate over the whole budget removes those collapses but slows the
discovery of the solution (docs/results.md, "Why some runs collapse after success"). Decaying only once the task is
solved is meant to keep both.

>>> from agents import MemoryPPO
>>> from agents.callbacks import DecayLROnSuccess
>>> model = MemoryPPO("MlpMemoryPolicy", "hqlt/PassiveTMaze-v0")          # doctest: +SKIP
>>> model.learn(100_000, callback=DecayLROnSuccess(threshold=0.9))          # doctest: +SKIP

The same callback under its general name, :class:`DecayOnSuccess`, can decay the entropy coefficient too
(``ent_coef=True``; the algorithm must take a schedule there, as MemoryPPO does). We tried it on T-Maze runs whose
greedy play fails where sampling succeeds: it did not remove those failures, and at a constant learning rate it
brought a few late collapses (docs/results.md, "Decaying the entropy bonus once the task is solved").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import ConstantSchedule

TRIGGERS = ("success", "return")


class DecayAfter:
    """A learning-rate schedule (SB3's ``Schedule``: progress remaining, 1 -> 0, to a rate) that follows ``base`` up to
    env step ``start_step``, then scales it down linearly to ``final_fraction`` of it at ``end_step`` and holds it there.

    SB3 passes only the progress remaining ``p``; the env step is ``(1 - p) * total_steps``, with ``total_steps`` the
    run's ``_total_timesteps`` (kept up to date by :class:`DecayLROnSuccess` when training continues).
    Picklable, so it travels in ``model.save`` like any SB3 schedule.
    """

    def __init__(
        self,
        base: Callable[[float], float],
        start_step: int,
        end_step: int,
        total_steps: int,
        final_fraction: float = 0.0,
    ) -> None:
        self.base = base
        self.start_step = int(start_step)
        self.end_step = max(int(end_step), self.start_step + 1)
        self.total_steps = int(total_steps)
        self.final_fraction = float(final_fraction)

    def factor(self, step: float) -> float:
        """The multiplier of the base rate at env step ``step``: 1 before the start, ``final_fraction`` after the end."""
        done = min(max((step - self.start_step) / (self.end_step - self.start_step), 0.0), 1.0)
        return 1.0 - (1.0 - self.final_fraction) * done

    def __call__(self, progress_remaining: float) -> float:
        step = (1.0 - progress_remaining) * self.total_steps
        return float(self.base(progress_remaining)) * self.factor(step)

    def __repr__(self) -> str:
        return (
            f"DecayAfter(start_step={self.start_step}, end_step={self.end_step}, total_steps={self.total_steps}, "
            f"final_fraction={self.final_fraction})"
        )


class DecayOnSuccess(BaseCallback):
    """Decay the learning rate (and, with ``ent_coef=True``, the entropy coefficient) linearly once the recent
    episodes show the task solved.

    The trigger is checked at the end of every rollout (before the update that uses the new rate): the mean of the
    last ``window`` finished episodes' success (``info["success"]`` or ``info["is_success"]``, ``on="success"``) or
    return (``info["episode"]["r"]`` from SB3's ``Monitor``, ``on="return"``) reaches ``threshold``. From then on the
    model's learning-rate schedule is wrapped in :class:`DecayAfter`: its rate falls linearly to ``final_fraction``
    of the scheduled rate over ``decay_steps`` env steps (default: until the end of ``learn``'s budget). It fires
    once per model: a model saved after the trigger keeps its decayed schedule, and continuing its training does not
    trigger it again (SB3 rebuilds ``lr_schedule`` from ``learning_rate`` on load, so both are set).
    ``triggered_at`` holds the env step of the trigger (None before it).

    With ``ent_coef=True`` the entropy coefficient is wrapped the same way; the algorithm must take a schedule there,
    as :class:`~agents.ppo.MemoryPPO` does (SB3's PPO takes only a float). With ``learning_rate=False`` the learning
    rate is left alone. ``DecayLROnSuccess`` is the same class (its defaults decay the learning rate only).

    :param threshold: success rate (in (0, 1]) or mean return that counts as solved
    :param window: finished episodes averaged (at least this many must have finished)
    :param on: ``"success"`` or ``"return"``
    :param decay_steps: env steps of the decay; None: until the end of training
    :param final_fraction: the rate at the end of the decay, as a fraction of the scheduled rate (in [0, 1))
    :param learning_rate: decay the learning rate
    :param ent_coef: decay the entropy coefficient
    """

    def __init__(
        self,
        threshold: float = 0.9,
        window: int = 100,
        on: str = "success",
        decay_steps: int | None = None,
        final_fraction: float = 0.0,
        learning_rate: bool = True,
        ent_coef: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        name = type(self).__name__
        if not (learning_rate or ent_coef):
            raise ValueError(f"{name} has nothing to decay: set 'learning_rate' or 'ent_coef' (or both) to True")
        if on not in TRIGGERS:
            raise ValueError(f"{name} field 'on'={on!r} is unknown; allowed: {', '.join(TRIGGERS)}")
        if on == "success" and not 0.0 < threshold <= 1.0:
            raise ValueError(
                f"{name} field 'threshold'={threshold!r} must be a success rate in (0, 1] with on='success'; "
                "for a return threshold pass on='return'"
            )
        if int(window) != window or window <= 0:
            raise ValueError(f"{name} field 'window'={window!r} must be a positive number of episodes")
        if decay_steps is not None and (int(decay_steps) != decay_steps or decay_steps <= 0):
            raise ValueError(
                f"{name} field 'decay_steps'={decay_steps!r} must be a positive number of env steps, "
                "or None to decay until the end of training"
            )
        if not 0.0 <= final_fraction < 1.0:
            raise ValueError(f"{name} field 'final_fraction'={final_fraction!r} must be in [0, 1)")
        self.threshold = float(threshold)
        self.window = int(window)
        self.on = on
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.final_fraction = float(final_fraction)
        self.decay_lr = bool(learning_rate)
        self.decay_ent = bool(ent_coef)
        self.values: deque[float] = deque(maxlen=self.window)
        self.episodes_without_value = 0
        self.triggered_at: int | None = None

    def _schedules(self) -> list[Any]:
        """The model's schedules this callback decays (its learning rate and / or its entropy coefficient)."""
        return ([self.model.learning_rate] if self.decay_lr else []) + ([self.model.ent_coef] if self.decay_ent else [])

    def _on_training_start(self) -> None:
        if self.decay_ent and not getattr(self.model, "ent_coef_schedules", False):
            raise ValueError(
                f"{type(self).__name__}(ent_coef=True) needs an algorithm whose 'ent_coef' may be a schedule, such as "
                f"agents.MemoryPPO; {type(self.model).__name__} takes only a float. Pass ent_coef=False"
            )
        for schedule in self._schedules():
            if isinstance(schedule, DecayAfter):  # triggered in an earlier learn() of this model (or before a save)
                self.triggered_at = schedule.start_step
                schedule.total_steps = int(self.model._total_timesteps)
                if self.decay_steps is None:
                    schedule.end_step = max(schedule.total_steps, schedule.start_step + 1)

    def _on_step(self) -> bool:
        if self.triggered_at is not None:
            return True
        for info, done in zip(self.locals.get("infos", []), self.locals.get("dones", [])):
            if not done:
                continue
            value = _episode_value(info, self.on)
            if value is None:
                self.episodes_without_value += 1
            else:
                self.values.append(value)
        if not self.values and self.episodes_without_value >= self.window:
            key = "info['success'] or info['is_success']" if self.on == "success" else "info['episode'] (SB3's Monitor)"
            fix = (
                "use on='return' with a return threshold, or report success in the info dict"
                if self.on == "success"
                else "wrap the env in stable_baselines3.common.monitor.Monitor (make_vec_env does)"
            )
            raise ValueError(
                f"{type(self).__name__}(on={self.on!r}) saw {self.episodes_without_value} finished episodes without "
                f"{key}; {fix}"
            )
        return True

    def _on_rollout_end(self) -> None:
        if self.triggered_at is not None or len(self.values) < self.window:
            return
        level = float(np.mean(self.values))
        if level < self.threshold:
            return
        total = int(self.model._total_timesteps)
        start = int(self.num_timesteps)
        end = total if self.decay_steps is None else start + self.decay_steps
        if self.decay_lr:
            schedule = DecayAfter(self.model.lr_schedule, start, end, total, self.final_fraction)
            # Both: SB3 rebuilds lr_schedule from learning_rate when a saved model is loaded.
            self.model.learning_rate = self.model.lr_schedule = schedule
            self.logger.record("train/lr_decay_start", start)
        if self.decay_ent:
            base = self.model.ent_coef
            base = base if callable(base) else ConstantSchedule(float(base))
            self.model.ent_coef = DecayAfter(base, start, end, total, self.final_fraction)
            self.logger.record("train/ent_coef_decay_start", start)
        self.triggered_at = start
        if self.verbose:
            parts = (("learning rate", self.decay_lr), ("entropy coefficient", self.decay_ent))
            what = " and ".join(name for name, on in parts if on)
            print(f"{type(self).__name__}: recent {self.on} {level:.3f} >= {self.threshold} at step {start}; "
                  f"decaying the {what} to {self.final_fraction} of it by step {end}")


DecayLROnSuccess = DecayOnSuccess  # its name from when it decayed the learning rate only (its defaults still do)


def _episode_value(info: dict[str, Any], on: str) -> float | None:
    if on == "success":
        value = info.get("success", info.get("is_success"))
        return None if value is None else float(value)
    episode = info.get("episode")
    return None if episode is None else float(episode["r"])
