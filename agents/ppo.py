"""MemoryPPO: Stable-Baselines3 PPO whose recurrent core is any memory from ``memory/``.

Rollouts step the memory once per env step (T = 1) for all envs as one batch and store the
policy state only at the start of each training sequence of ``seq_len`` steps. Training
replays whole sequences from those states with one memory call of T = seq_len (the memory's
chunk-parallel form), in shuffled minibatches of ``batch_size // seq_len`` sequences; the PPO
loss is SB3's.
"""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, check_for_correct_spaces, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from agents.buffers import MemoryDictRolloutBuffer, MemoryRolloutBuffer
from agents.policies import (
    CnnMemoryPolicy,
    MemoryActorCriticPolicy,
    MemoryPolicyState,
    MlpMemoryPolicy,
    MultiInputMemoryPolicy,
)
from memory.state import index_state, state_leaves

SelfMemoryPPO = TypeVar("SelfMemoryPPO", bound="MemoryPPO")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"MemoryPPO '{name}' must be a positive integer, got {value!r}")
    return int(value)


def clipped_objective(
    advantages: torch.Tensor, ratio: torch.Tensor, clip_range: float, dual_clip: float | None = None
) -> torch.Tensor:
    """PPO's per-sample surrogate min(r A, clip(r, 1 - eps, 1 + eps) A); with ``dual_clip`` = c, negative-advantage
    samples get max(that, c A) instead (dual-clip PPO), which bounds them as r grows."""
    objective = torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
    if dual_clip is None:
        return objective
    return torch.where(advantages < 0, torch.max(objective, dual_clip * advantages), objective)


class MemoryPPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization with a sequence memory (HQLT, KV, DeltaNet, LSTM, GRU, ...).

    Arguments are SB3 PPO's, plus:

    :param seq_len: length of the training sequences; the policy state is stored once per sequence and
        ``n_steps`` must be a multiple of it.
    :param batch_size: minibatch size in steps, a multiple of ``seq_len`` (``batch_size // seq_len`` sequences).
    :param dual_clip: None (SB3's objective) or c > 1: dual-clip PPO (Ye et al. 2020). For a negative advantage
        the clipped objective min(r A, clip(r) A) is unbounded below as the ratio r grows; dual clip bounds it by
        c A, so a few samples whose probability ratio explodes (a rare action of a near-deterministic policy)
        cannot dominate an update. Typical c: 3.
    :param ent_coef: entropy bonus coefficient: a float, or a schedule of the progress remaining (1 -> 0) as for
        ``learning_rate`` and ``clip_range`` (read once per update; logged as ``train/ent_coef``).
    :param memory_reset_prob: probability, per env and stored sequence, that the env's whole memory state is set to
        the initial state where the sequence starts (its replay starts there too). A memory that carries across
        episodes (``carry_fw_across_episodes``) is otherwise fresh only when training starts, and its policy may not
        act well from a fresh state later (``docs/results.md``, greedy failures); 0 (the default) never resets.

    Choose the memory with ``policy_kwargs=dict(memory="hqlt", memory_kwargs=dict(d_model=64, window=32))``;
    see :class:`~agents.policies.MemoryActorCriticPolicy` for the other options.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpMemoryPolicy": MlpMemoryPolicy,
        "CnnMemoryPolicy": CnnMemoryPolicy,
        "MultiInputMemoryPolicy": MultiInputMemoryPolicy,
    }
    policy: MemoryActorCriticPolicy
    rollout_buffer: MemoryRolloutBuffer | MemoryDictRolloutBuffer
    memory_reset_prob: float = 0.0  # class defaults: checkpoints saved before the option existed load with it off
    ent_coef_schedules: ClassVar[bool] = True  # ent_coef may be a schedule (agents.callbacks.DecayOnSuccess checks)
    _n_memory_resets: int = 0

    def __init__(
        self,
        policy: str | type[MemoryActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        seq_len: int = 32,
        batch_size: int = 128,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float | Schedule = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        dual_clip: float | None = None,
        memory_reset_prob: float = 0.0,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        n_steps = _positive_int("n_steps", n_steps)
        self.seq_len = _positive_int("seq_len", seq_len)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.n_epochs = _positive_int("n_epochs", n_epochs)
        if n_steps % self.seq_len != 0:
            raise ValueError(
                f"MemoryPPO 'n_steps'={n_steps} must be a multiple of 'seq_len'={self.seq_len} "
                "(the rollout is cut into whole training sequences); "
                f"e.g. n_steps={max(1, n_steps // self.seq_len) * self.seq_len}"
            )
        if self.batch_size % self.seq_len != 0:
            raise ValueError(
                f"MemoryPPO 'batch_size'={self.batch_size} (counted in steps) must be a multiple of 'seq_len'={self.seq_len}; "
                f"e.g. batch_size={max(1, self.batch_size // self.seq_len) * self.seq_len}"
            )
        if self.env is not None:
            rollout_size = self.env.num_envs * n_steps
            if self.batch_size > rollout_size:
                raise ValueError(
                    f"MemoryPPO 'batch_size'={self.batch_size} exceeds the rollout size n_steps * n_envs = {rollout_size}"
                )
            if rollout_size % self.batch_size != 0:
                warnings.warn(
                    f"the rollout size n_steps * n_envs = {rollout_size} is not a multiple of batch_size={self.batch_size}: "
                    f"each epoch ends with a smaller minibatch of {rollout_size % self.batch_size} steps",
                    stacklevel=2,
                )
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        bad_number = isinstance(dual_clip, bool) or not isinstance(dual_clip, (int, float))
        if dual_clip is not None and (bad_number or not dual_clip > 1):
            raise ValueError(f"MemoryPPO 'dual_clip'={dual_clip!r} must be a number > 1 (typically 3), or None to disable it")
        self.dual_clip = None if dual_clip is None else float(dual_clip)
        bad_number = isinstance(memory_reset_prob, bool) or not isinstance(memory_reset_prob, (int, float))
        if bad_number or not 0.0 <= memory_reset_prob <= 1.0:
            raise ValueError(
                f"MemoryPPO 'memory_reset_prob'={memory_reset_prob!r} must be a probability in [0, 1] (0: never reset a "
                "memory state between episode starts)"
            )
        self.memory_reset_prob = float(memory_reset_prob)
        if not callable(ent_coef):
            if isinstance(ent_coef, bool) or not isinstance(ent_coef, (int, float)) or not ent_coef >= 0:
                raise ValueError(
                    f"MemoryPPO 'ent_coef'={ent_coef!r} must be a number >= 0 or a schedule (a callable of the progress "
                    "remaining, e.g. stable_baselines3.common.utils.LinearSchedule(0.01, 0.0, 1.0))"
                )
        self._last_memory_state: MemoryPolicyState | None = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        if not isinstance(self.policy, MemoryActorCriticPolicy):
            raise ValueError(
                f"MemoryPPO needs a MemoryActorCriticPolicy (e.g. 'MlpMemoryPolicy'), got {type(self.policy).__name__}"
            )
        self.policy = self.policy.to(self.device)
        buffer_cls = MemoryDictRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else MemoryRolloutBuffer
        self.rollout_buffer = buffer_cls(
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            seq_len=self.seq_len,
        )
        self._last_memory_state = self.policy.initial_state(self.n_envs)
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError(f"MemoryPPO 'clip_range_vf'={self.clip_range_vf} must be positive, or None to disable it")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_memory_state"]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        state = self._last_memory_state
        leaves = state_leaves(state) if state is not None else []
        if state is None or (leaves and leaves[0].shape[0] != self.n_envs):
            self._last_memory_state = self.policy.initial_state(self.n_envs)
        if self.rollout_buffer.n_envs != self.n_envs:
            raise ValueError(
                f"the env has {self.n_envs} sub-envs but this MemoryPPO was built for {self.rollout_buffer.n_envs}; "
                "create or load the model with the new env instead of set_env"
            )
        return result

    def _reset_some_states(self, state: MemoryPolicyState, reset: np.ndarray) -> MemoryPolicyState:
        """``state`` with the envs where ``reset`` (n_envs,) is True set to the initial state (their whole memory,
        fast weights carried across episodes too). Applied where a stored sequence starts, so the replay in training
        starts from the same state: the policy learns to act from a fresh memory at any step."""
        self._n_memory_resets += int(reset.sum())
        if not reset.any():
            return state
        mask = torch.as_tensor(reset, device=self.device)

        def select(new: torch.Tensor | None, old: torch.Tensor | None) -> torch.Tensor | None:
            return None if old is None else torch.where(mask.view(-1, *([1] * (old.dim() - 1))), new.to(old.dtype), old)

        with torch.inference_mode():
            return torch.utils._pytree.tree_map(select, self.policy.initial_state(len(reset)), state)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        """SB3's episode bookkeeping; an info's ``success`` counts as ``is_success`` (rollout/success_rate)."""
        infos = [
            {**info, "is_success": info["success"]} if "success" in info and "is_success" not in info else info
            for info in infos
        ]
        super()._update_info_buffer(infos, dones)

    # ------------------------------------------------------------------ rollouts

    def _terminal_values(
        self, infos: list[dict[str, Any]], indices: list[int], state: MemoryPolicyState
    ) -> np.ndarray:
        """Values (len(indices),) of truncated episodes' final observations, under each env's state after its last step."""
        finals = [infos[i]["terminal_observation"] for i in indices]
        if isinstance(finals[0], dict):
            batch: Any = {key: np.stack([f[key] for f in finals]) for key in finals[0]}
        else:
            batch = np.stack(finals)
        obs_tensor, _ = self.policy.obs_to_tensor(batch)
        sub_state = index_state(state, torch.as_tensor(indices, device=self.device))
        starts = torch.zeros(len(indices), dtype=torch.bool, device=self.device)
        with torch.no_grad():
            values = self.policy.predict_values(obs_tensor, sub_state, starts)
        return values.flatten().cpu().numpy()

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Fill the buffer with ``n_rollout_steps`` steps per env, storing the policy state every ``seq_len`` steps."""
        assert isinstance(rollout_buffer, (MemoryRolloutBuffer, MemoryDictRolloutBuffer))
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        state = self._last_memory_state
        assert state is not None

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            if n_steps % self.seq_len == 0:
                if self.memory_reset_prob > 0.0:
                    state = self._reset_some_states(state, np.random.random(env.num_envs) < self.memory_reset_prob)
                rollout_buffer.add_state(state)
            # inference_mode: less per-op overhead than no_grad. Its tensors never enter autograd: the buffer stacks
            # the stored states into fresh tensors before training reads them.
            with torch.inference_mode():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                starts = torch.as_tensor(self._last_episode_starts, device=self.device).bool()
                actions, values, log_probs, state = self.policy(obs_tensor, state, starts)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                self._last_memory_state = state
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            # The reward just received is the next step's input (copied: rewards is changed in place below).
            state = self.policy.with_reward(state, rewards)
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)

            # Time-limit truncation: bootstrap from the final observation's value, under the env's memory state
            # after the episode's last step (no reset).
            truncated = [
                i
                for i, done in enumerate(dones)
                if done
                and infos[i].get("terminal_observation") is not None
                and infos[i].get("TimeLimit.truncated", False)
            ]
            if truncated:
                rewards = rewards.astype(np.float32, copy=True)
                rewards[truncated] += self.gamma * self._terminal_values(infos, truncated, state)

            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        self._last_memory_state = state
        with torch.no_grad():
            starts = torch.as_tensor(dones, device=self.device).bool()
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device), state, starts)  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ training

    def train(self) -> None:
        """PPO update on whole sequences replayed from their stored start states."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        ent_coef = self.current_ent_coef()
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        loss = torch.zeros(())
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for batch in self.rollout_buffer.get_sequences(self.batch_size):
                values, log_prob, entropy = self.policy.evaluate_sequences(
                    batch.observations, batch.actions, batch.rewards, batch.states, batch.episode_starts
                )
                advantages = batch.advantages.flatten()
                old_log_prob = batch.old_log_prob.flatten()
                old_values = batch.old_values.flatten()
                returns = batch.returns.flatten()
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                ratio = torch.exp(log_prob - old_log_prob)
                policy_loss = -clipped_objective(advantages, ratio, clip_range, self.dual_clip).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())

                if clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(returns, values_pred)
                value_losses.append(value_loss.item())

                entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + ent_coef * entropy_loss + self.vf_coef * value_loss

                with torch.no_grad():
                    log_ratio = log_prob - old_log_prob
                    approx_kl_div = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", torch.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if self.memory_reset_prob > 0.0:
            self.logger.record("rollout/memory_resets", self._n_memory_resets)
        self.logger.record("train/clip_range", clip_range)
        self.logger.record("train/ent_coef", ent_coef)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        for key, value in self.policy.memory_diagnostics().items():
            self.logger.record(key, value)

    def current_ent_coef(self) -> float:
        """The entropy coefficient of the next update (``ent_coef``, or its schedule at the current progress)."""
        if callable(self.ent_coef):
            return float(self.ent_coef(self._current_progress_remaining))
        return self.ent_coef

    # ------------------------------------------------------------------ user API

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: MemoryPolicyState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, MemoryPolicyState]:
        """``(action, state)`` for one step, as sb3-contrib's RecurrentPPO: pass the returned state back in."""
        return self.policy.predict(observation, state, episode_start, deterministic)

    def learn(
        self: SelfMemoryPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MemoryPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMemoryPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfMemoryPPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: torch.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfMemoryPPO:
        """Load a saved MemoryPPO; a file saved by another algorithm, or an env with other spaces, raises ValueError."""
        start = path.tell() if isinstance(path, io.IOBase) else None
        data, _, _ = load_from_zip_file(path, device="cpu", custom_objects=custom_objects, load_data=True)
        if start is not None:
            path.seek(start)  # type: ignore[union-attr]
        policy_class = (data or {}).get("policy_class")
        if not (isinstance(policy_class, type) and issubclass(policy_class, MemoryActorCriticPolicy)):
            found = policy_class.__name__ if isinstance(policy_class, type) else repr(policy_class)[:80]
            raise ValueError(
                f"{path!s} is not a MemoryPPO model: its policy is {found}, not a MemoryActorCriticPolicy; "
                "load it with the algorithm that saved it (e.g. stable_baselines3.PPO.load)"
            )
        if env is not None:
            wrapped = cls._wrap_env(env, data.get("verbose", 0))
            try:
                check_for_correct_spaces(wrapped, data["observation_space"], data["action_space"])
            except ValueError as err:
                raise ValueError(
                    f"cannot load MemoryPPO model {path!s} with this env: {err}. The model was trained with "
                    f"observation space {data['observation_space']} and action space {data['action_space']}"
                ) from err
            env = wrapped
        return super().load(  # type: ignore[return-value]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

