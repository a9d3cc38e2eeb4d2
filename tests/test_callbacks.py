"""DecayLROnSuccess: the schedule's arithmetic, when it fires, the rates the optimizer gets, save/load, bad input."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import MemoryPPO
from agents.callbacks import DecayAfter, DecayLROnSuccess, DecayOnSuccess

TINY = dict(d_model=16, n_layers=1, n_heads=2, window=4)
LR = 1e-3


class FixedOutcomeEnv(gym.Env):
    """Two-step episodes whose outcome is fixed: ``info[key]`` at the end is ``succeed`` (no key when ``key`` is None),
    reward 1 for a success."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, succeed: bool = True, key: str | None = "success") -> None:
        self.succeed, self.key, self.t = succeed, key, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        done = self.t >= 2
        info = {self.key: self.succeed} if done and self.key is not None else {}
        return np.full(2, self.t / 2, np.float32), float(done and self.succeed), done, False, info


class UpdateRecorder(BaseCallback):
    """``read(model)`` after each update of this ``learn`` call, with the env step of the update."""

    def __init__(self, read: Any) -> None:
        super().__init__()
        self.read = read
        self.rows: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.n_calls > 0:  # not before the first rollout: what it reads then is the previous learn()'s
            self.rows.append((int(self.model.num_timesteps), self.read(self.model)))


def RateRecorder() -> UpdateRecorder:  # noqa: N802  (reads like the class it stands for)
    """The optimizer's learning rate of each update."""
    return UpdateRecorder(lambda model: model.policy.optimizer.param_groups[0]["lr"])


def EntCoefRecorder() -> UpdateRecorder:  # noqa: N802
    """The entropy coefficient each update used (the progress is the update's until the next rollout ends)."""
    return UpdateRecorder(lambda model: model.current_ent_coef())


def make_model(algo: str = "memory", n_envs: int = 2, **env_kwargs: Any) -> Any:
    env = make_vec_env(FixedOutcomeEnv, n_envs=n_envs, seed=0, env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)
    if algo == "ppo":
        return PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, learning_rate=LR, seed=0, device="cpu")
    return MemoryPPO(
        "MlpMemoryPolicy", env, n_steps=16, seq_len=8, batch_size=16, n_epochs=1, learning_rate=LR, seed=0,
        device="cpu", policy_kwargs=dict(memory="hqlt", memory_kwargs=TINY),
    )


def test_decay_after_arithmetic() -> None:
    sched = DecayAfter(lambda p: LR, start_step=600, end_step=1000, total_steps=1000)
    for step, want in ((0, LR), (600, LR), (800, LR / 2), (1000, 0.0)):
        assert sched(1 - step / 1000) == pytest.approx(want)
    floor = DecayAfter(lambda p: LR * p, start_step=0, end_step=500, total_steps=1000, final_fraction=0.1)
    assert floor(1.0) == pytest.approx(LR)
    assert floor(0.75) == pytest.approx(LR * 0.75 * 0.55)  # step 250: halfway down to 0.1 of the base schedule
    assert floor(0.25) == pytest.approx(LR * 0.25 * 0.1)  # past the end: held at the floor


@pytest.mark.parametrize("algo", ["memory", "ppo"])
def test_fires_once_solved_and_decays_the_optimizer_rate(algo: str) -> None:
    model = make_model(algo)
    decay, rates = DecayLROnSuccess(threshold=0.9, window=10), RateRecorder()
    total = 320
    model.learn(total, callback=CallbackList([decay, rates]))
    # Every episode succeeds: 10 episodes of 2 steps on 2 envs end within the first rollout (32 steps).
    assert decay.triggered_at == 32
    assert isinstance(model.learning_rate, DecayAfter)
    steps, lrs = zip(*rates.rows)
    assert steps[0] == 32 and lrs[0] == pytest.approx(LR)  # the update right after the trigger still uses the full rate
    for step, lr in rates.rows:
        assert lr == pytest.approx(LR * (1 - (step - 32) / (total - 32)))
    assert lrs[-1] == pytest.approx(LR * (1 - (288 - 32) / (total - 32)))


def test_no_trigger_below_threshold_or_before_the_window_fills() -> None:
    model = make_model(succeed=False)
    decay, rates = DecayLROnSuccess(threshold=0.9, window=10), RateRecorder()
    model.learn(160, callback=CallbackList([decay, rates]))
    assert decay.triggered_at is None and not isinstance(model.learning_rate, DecayAfter)
    assert all(lr == pytest.approx(LR) for _, lr in rates.rows)
    model = make_model()  # all successes, but fewer episodes than the window
    decay = DecayLROnSuccess(threshold=0.9, window=1000)
    model.learn(160, callback=decay)
    assert decay.triggered_at is None


def test_on_return_with_decay_steps_and_floor() -> None:
    model = make_model(key=None)  # no success key: only the Monitor's episode return
    decay, rates = DecayLROnSuccess(threshold=1.0, window=10, on="return", decay_steps=64, final_fraction=0.25), RateRecorder()
    model.learn(256, callback=CallbackList([decay, rates]))
    assert decay.triggered_at == 32
    by_step = dict(rates.rows)
    assert by_step[64] == pytest.approx(LR * (1 - 0.75 * 0.5))
    assert by_step[96] == pytest.approx(LR * 0.25) and by_step[224] == pytest.approx(LR * 0.25)


def test_saved_model_keeps_its_decay_and_does_not_fire_again(tmp_path) -> None:
    model = make_model()
    model.learn(160, callback=DecayLROnSuccess(threshold=0.9, window=10))
    model.save(tmp_path / "m.zip")
    loaded = MemoryPPO.load(tmp_path / "m.zip", env=model.get_env())
    assert isinstance(loaded.learning_rate, DecayAfter) and loaded.learning_rate.start_step == 32
    decay, rates = DecayLROnSuccess(threshold=0.9, window=10), RateRecorder()
    loaded.learn(160, callback=CallbackList([decay, rates]), reset_num_timesteps=False)
    assert decay.triggered_at == 32  # the earlier trigger, not a new one
    # The decay now runs to the end of the extended budget (320 steps), from the same start.
    for step, lr in rates.rows:
        assert lr == pytest.approx(LR * (1 - (step - 32) / (320 - 32)))


def test_bad_input_names_the_field_and_the_fix() -> None:
    for kwargs, field in (
        (dict(on="loss"), "'on'"),
        (dict(threshold=1.5), "'threshold'"),
        (dict(threshold=0.0), "'threshold'"),
        (dict(window=0), "'window'"),
        (dict(decay_steps=0), "'decay_steps'"),
        (dict(final_fraction=1.0), "'final_fraction'"),
    ):
        with pytest.raises(ValueError, match=field):
            DecayLROnSuccess(**kwargs)
    DecayLROnSuccess(threshold=250.0, on="return")  # a return threshold may be anything
    model = make_model(key=None)
    with pytest.raises(ValueError, match="on='return'"):
        model.learn(160, callback=DecayLROnSuccess(window=10))


ENT = 0.02


def test_decays_the_entropy_coefficient_alone_or_with_the_rate() -> None:
    """ent_coef=True wraps MemoryPPO's entropy coefficient as the rate's (full until the trigger, then linear to 0 at
    the budget); learning_rate=False leaves the rate alone; both together decay both from the same step."""
    for decay_lr in (False, True):
        model = make_model()
        model.ent_coef = ENT
        decay, ents, rates = DecayOnSuccess(threshold=0.9, window=10, learning_rate=decay_lr, ent_coef=True), \
            EntCoefRecorder(), RateRecorder()
        total = 320
        model.learn(total, callback=CallbackList([decay, ents, rates]))
        assert decay.triggered_at == 32 and isinstance(model.ent_coef, DecayAfter)
        assert ents.rows[0] == (32, pytest.approx(ENT))
        for step, ent in ents.rows:
            assert ent == pytest.approx(ENT * (1 - (step - 32) / (total - 32)))
        assert isinstance(model.learning_rate, DecayAfter) == decay_lr
        for step, lr in rates.rows:
            assert lr == pytest.approx(LR * (1 - (step - 32) / (total - 32)) if decay_lr else LR)


def test_saved_model_keeps_its_entropy_decay(tmp_path) -> None:
    model = make_model()
    model.ent_coef = ENT
    model.learn(160, callback=DecayOnSuccess(threshold=0.9, window=10, learning_rate=False, ent_coef=True))
    model.save(tmp_path / "m.zip")
    loaded = MemoryPPO.load(tmp_path / "m.zip", env=model.get_env())
    assert isinstance(loaded.ent_coef, DecayAfter) and loaded.ent_coef.start_step == 32
    decay, ents = DecayOnSuccess(threshold=0.9, window=10, learning_rate=False, ent_coef=True), EntCoefRecorder()
    loaded.learn(160, callback=CallbackList([decay, ents]), reset_num_timesteps=False)
    assert decay.triggered_at == 32  # the earlier trigger, not a new one
    for step, ent in ents.rows:
        assert ent == pytest.approx(ENT * (1 - (step - 32) / (320 - 32)))


def test_entropy_decay_bad_input() -> None:
    with pytest.raises(ValueError, match="nothing to decay"):
        DecayOnSuccess(learning_rate=False, ent_coef=False)
    assert DecayLROnSuccess is DecayOnSuccess  # the old name, with the same defaults (the learning rate only)
    assert (DecayLROnSuccess().decay_lr, DecayLROnSuccess().decay_ent) == (True, False)
    with pytest.raises(ValueError, match="'ent_coef' may be a schedule.*MemoryPPO"):
        make_model("ppo").learn(64, callback=DecayOnSuccess(window=10, ent_coef=True))
