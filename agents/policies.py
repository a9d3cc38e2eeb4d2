"""Actor-critic policies whose recurrent core is any memory from ``memory/``.

Data flows: observation -> SB3 features extractor -> linear projection to ``d_model``
(optionally with the previous action and reward appended) -> memory -> SB3 ``MlpExtractor``
-> action and value heads. By default actor and critic share one memory trunk (one forward
per step gives both); ``critic_memory=True`` gives the critic its own projection and memory.

The policy's recurrent state is a :class:`MemoryPolicyState`; the memory states inside it are
opaque (handled only through ``memory.state`` helpers).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from memory import build_memory, state_leaves
from memory.state import State

DEFAULT_D_MODEL = 64


class MemoryPolicyState(NamedTuple):
    """Recurrent state of a :class:`MemoryActorCriticPolicy` for a batch of B environments."""

    actor: State
    """State of the shared trunk (or the actor's memory when ``critic_memory=True``)."""
    critic: State | None
    """State of the critic's own memory, None with a shared trunk."""
    prev_action: torch.Tensor
    """(B, A) last action taken, raw (a Discrete action is its index); (B, 0) when ``prev_action_reward=False``."""
    prev_reward: torch.Tensor
    """(B, 1) last reward received; (B, 0) when ``prev_action_reward=False``."""


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``fn`` to every leaf (tensor or array) of a nested NamedTuple / tuple / list / dict; None stays None."""
    if tree is None:
        return None
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_map(fn, t) for t in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def _check_memory_module(module: nn.Module) -> None:
    missing = [name for name in ("initial_state", "forward") if not callable(getattr(module, name, None))]
    if missing or not isinstance(getattr(module, "d_model", None), int):
        raise ValueError(
            "policy_kwargs 'memory' must be a name accepted by memory.build_memory or an nn.Module with an int "
            f"'d_model', 'initial_state(batch_size, device)' and 'forward(x, state, episode_starts)'; "
            f"{type(module).__name__} lacks {missing or ['d_model']}"
        )


class MemoryActorCriticPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy with a sequence memory between the features extractor and the heads.

    Beyond :class:`~stable_baselines3.common.policies.ActorCriticPolicy`'s arguments:

    :param memory: a name for ``memory.build_memory`` (hqlt, kv, deltanet, linear, lstm, gru, none) or a module
        following the memory contract (``initial_state``, ``forward(x [B,T,D], state, episode_starts [B,T])``).
    :param memory_kwargs: config for ``build_memory`` (``d_model`` defaults to 64, other MemoryConfig fields);
        must be empty when ``memory`` is a module.
    :param critic_memory: give the critic its own projection and memory (default: one shared trunk).
    :param prev_action_reward: also feed the previous action (one-hot for discrete spaces) and reward to the memory;
        both are zero at an episode start. ``predict`` cannot know rewards: it feeds the reward stored in the
        state (``state.prev_reward``, zero unless the caller sets it).
    :param compile_memory: opt in to ``torch.compile`` for the memory's training replay (multi-step calls with
        gradients, ``memory.Memory.compile_training``) and its rollout steps (``memory.Memory.compile_rollout``;
        ``predict`` stays eager): faster updates and rollouts after compiles of about a minute in all at the first
        rollout and update. Needs a memory from ``memory.build_memory`` (or a module with ``compile_training`` and
        ``compile_rollout``).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        memory: str | nn.Module = "hqlt",
        memory_kwargs: dict[str, Any] | None = None,
        critic_memory: bool = False,
        prev_action_reward: bool = False,
        compile_memory: bool = False,
    ) -> None:
        if features_extractor_class is None:
            features_extractor_class, default_kwargs = self.default_extractor(observation_space)
            features_extractor_kwargs = {**default_kwargs, **(features_extractor_kwargs or {})}
        memory_kwargs = dict(memory_kwargs or {})
        if isinstance(memory, nn.Module):
            _check_memory_module(memory)
            if memory_kwargs:
                raise ValueError(
                    f"policy_kwargs 'memory_kwargs'={memory_kwargs} must be empty when 'memory' is a module instance "
                    "(configure the module itself)"
                )
            d_model = memory.d_model
        elif isinstance(memory, str):
            d_model = memory_kwargs.pop("d_model", DEFAULT_D_MODEL)
        else:
            raise ValueError(
                f"policy_kwargs 'memory' must be a memory name (str) or an nn.Module, got {type(memory).__name__}"
            )
        for name, flag in (
            ("critic_memory", critic_memory),
            ("prev_action_reward", prev_action_reward),
            ("compile_memory", compile_memory),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"policy_kwargs '{name}'={flag!r} must be true or false")
        if compile_memory and isinstance(memory, nn.Module):
            missing = [m for m in ("compile_training", "compile_rollout") if not callable(getattr(memory, m, None))]
            if missing:
                raise ValueError(
                    f"policy_kwargs 'compile_memory'=True needs a memory with compile_training() and "
                    f"compile_rollout(); {type(memory).__name__} has no {' or '.join(missing)}(): subclass "
                    "memory.Memory, or leave compile_memory=False"
                )
        if not share_features_extractor and not critic_memory:
            raise ValueError(
                "policy_kwargs 'share_features_extractor'=False needs a separate critic memory: "
                "also pass critic_memory=True (or keep share_features_extractor=True)"
            )
        if optimizer_class in (torch.optim.Adam, torch.optim.AdamW):
            if optimizer_kwargs is None and optimizer_class is torch.optim.Adam:
                # SB3's default for Adam when no optimizer_kwargs are given (ActorCriticPolicy sets it only for
                # None, and we pass a dict below), so that MemoryPPO trains like PPO and RecurrentPPO. Runs with
                # torch's 1e-8 recovered less often from late collapses (docs/results.md, the collapse study).
                optimizer_kwargs = {"eps": 1e-5}
            optimizer_kwargs = dict(optimizer_kwargs or {})
            if "fused" not in optimizer_kwargs and "foreach" not in optimizer_kwargs:
                # Same update, one kernel for all parameters: the memory has ~40 small tensors and the for-loop
                # Adam costs ~1.5 ms per minibatch on CPU in per-op overhead alone.
                optimizer_kwargs["fused"] = True
        # Plain attributes only before nn.Module.__init__ (it runs inside super().__init__); modules are built
        # in _build_mlp_extractor, which super().__init__ calls before the optimizer is created.
        self._memory_spec = (memory, memory_kwargs)
        self.memory_name = memory if isinstance(memory, str) else type(memory).__name__
        self.memory_kwargs = dict(memory_kwargs, d_model=d_model) if isinstance(memory, str) else {}
        self.d_model = d_model
        self.critic_memory = critic_memory
        self.prev_action_reward = prev_action_reward
        self.compile_memory = compile_memory
        self._action_raw_dim, self._action_enc_dim = self._action_dims(action_space)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=use_sde,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            squash_output=squash_output,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    # ------------------------------------------------------------------ construction

    fallback_extractor: type[BaseFeaturesExtractor] = FlattenExtractor
    """Extractor used when none is given and ``agents.extractors`` has no default for the observation space."""

    @classmethod
    def default_extractor(cls, observation_space: spaces.Space) -> tuple[type[BaseFeaturesExtractor], dict[str, Any]]:
        """The project's extractor for this space (``agents.extractors.default_extractor_for``), else the fallback."""
        try:
            from agents.extractors import default_extractor_for
        except ImportError:
            return cls.fallback_extractor, {}
        found = default_extractor_for(observation_space)
        if found is None:
            return cls.fallback_extractor, {}
        if isinstance(found, tuple):
            return found[0], dict(found[1] or {})
        return found, {}

    @staticmethod
    def _action_dims(action_space: spaces.Space) -> tuple[int, int]:
        """(raw width stored in the state, width of its encoding fed to the memory)."""
        if isinstance(action_space, spaces.Discrete):
            return 1, int(action_space.n)
        if isinstance(action_space, spaces.MultiDiscrete):
            return len(action_space.nvec), int(np.sum(action_space.nvec))
        if isinstance(action_space, spaces.MultiBinary):
            n = int(np.prod(action_space.shape))
            return n, n
        if isinstance(action_space, spaces.Box):
            n = int(np.prod(action_space.shape))
            return n, n
        raise ValueError(
            f"action space {action_space} is not supported; allowed: Discrete, MultiDiscrete, MultiBinary, Box"
        )

    def _build_mlp_extractor(self) -> None:
        memory, memory_kwargs = self._memory_spec
        del self._memory_spec
        extra = self._action_enc_dim + 1 if self.prev_action_reward else 0
        in_dim = self.features_dim + extra
        self.memory_proj = nn.Linear(in_dim, self.d_model)
        if isinstance(memory, str):
            self.memory = build_memory(memory, self.d_model, **memory_kwargs)
            vf_memory = build_memory(memory, self.d_model, **memory_kwargs) if self.critic_memory else None
        else:
            self.memory = memory
            vf_memory = copy.deepcopy(memory) if self.critic_memory else None
        if self.compile_memory:
            for module in (self.memory, vf_memory):
                if module is not None:
                    module.compile_training()
                    module.compile_rollout()
        if vf_memory is not None:
            self.vf_memory_proj = nn.Linear(in_dim, self.d_model)
            self.vf_memory = vf_memory
        else:
            self.vf_memory_proj = None
            self.vf_memory = None
        self.mlp_extractor = MlpExtractor(
            self.d_model, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            memory=self.memory_name if self.memory_kwargs else self.memory,
            memory_kwargs=self.memory_kwargs,
            critic_memory=self.critic_memory,
            prev_action_reward=self.prev_action_reward,
            compile_memory=self.compile_memory,
            share_features_extractor=self.share_features_extractor,
            normalize_images=self.normalize_images,
        )
        return data

    # ------------------------------------------------------------------ state

    def initial_state(self, n_envs: int) -> MemoryPolicyState:
        """The state at an episode start for ``n_envs`` environments, on the policy's device."""
        device = self.device
        actor = self.memory.initial_state(n_envs, device)
        critic = self.vf_memory.initial_state(n_envs, device) if self.vf_memory is not None else None
        a_dim, r_dim = (self._action_raw_dim, 1) if self.prev_action_reward else (0, 0)
        return MemoryPolicyState(
            actor,
            critic,
            torch.zeros(n_envs, a_dim, device=device),
            torch.zeros(n_envs, r_dim, device=device),
        )

    def with_reward(self, state: MemoryPolicyState, rewards: np.ndarray | torch.Tensor) -> MemoryPolicyState:
        """Return ``state`` with the reward just received ((B,)), used as input at the next step."""
        if not self.prev_action_reward:
            return state
        rewards = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=self.device).reshape(-1, 1).clone()
        return state._replace(prev_reward=rewards)

    # ------------------------------------------------------------------ core

    def _encode_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions (..., A) -> encoding (..., E): one-hot for discrete spaces, as is otherwise."""
        if isinstance(self.action_space, spaces.Discrete):
            return F.one_hot(actions[..., 0].long(), int(self.action_space.n)).float()
        if isinstance(self.action_space, spaces.MultiDiscrete):
            parts = [F.one_hot(actions[..., i].long(), int(n)).float() for i, n in enumerate(self.action_space.nvec)]
            return torch.cat(parts, dim=-1)
        return actions.float()

    def _memory_input(
        self,
        proj: nn.Module,
        features: torch.Tensor,
        prev_actions: torch.Tensor,
        prev_rewards: torch.Tensor,
        episode_starts: torch.Tensor,
    ) -> torch.Tensor:
        """features (B*T, F), prev_actions (B, T, A), prev_rewards (B, T, 1), episode_starts (B, T) -> x (B, T, D)."""
        batch, steps = episode_starts.shape
        features = features.reshape(batch, steps, -1)  # (B, T, F)
        if self.prev_action_reward:
            keep = (~episode_starts).unsqueeze(-1).to(features.dtype)  # (B, T, 1)
            extra = torch.cat([self._encode_action(prev_actions), prev_rewards], dim=-1) * keep  # (B, T, E + 1)
            features = torch.cat([features, extra], dim=-1)
        return proj(features)

    def _latents(
        self,
        obs: PyTorchObs,
        state: MemoryPolicyState,
        episode_starts: torch.Tensor,
        prev_actions: torch.Tensor,
        prev_rewards: torch.Tensor,
        need_actor: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor, State, State | None]:
        """Run extractor -> memory -> MlpExtractor on B*T flattened observations.

        obs (B*T, ...), episode_starts (B, T) bool -> latent_pi (B*T, P) or None, latent_vf (B*T, V),
        new actor state, new critic state.
        """
        batch, steps = episode_starts.shape
        features = self.extract_features(obs)
        if self.share_features_extractor:
            pi_features = vf_features = features
        else:
            pi_features, vf_features = features
        if self.vf_memory is None:
            x = self._memory_input(self.memory_proj, pi_features, prev_actions, prev_rewards, episode_starts)
            y, actor_state = self.memory(x, state.actor, episode_starts)  # (B, T, D)
            latent_pi, latent_vf = self.mlp_extractor(y.reshape(batch * steps, self.d_model))
            return latent_pi, latent_vf, actor_state, None
        latent_pi, actor_state = None, state.actor
        if need_actor:
            x = self._memory_input(self.memory_proj, pi_features, prev_actions, prev_rewards, episode_starts)
            y, actor_state = self.memory(x, state.actor, episode_starts)  # (B, T, D)
            latent_pi = self.mlp_extractor.forward_actor(y.reshape(batch * steps, self.d_model))
        xc = self._memory_input(self.vf_memory_proj, vf_features, prev_actions, prev_rewards, episode_starts)
        yc, critic_state = self.vf_memory(xc, state.critic, episode_starts)  # (B, T, D)
        latent_vf = self.mlp_extractor.forward_critic(yc.reshape(batch * steps, self.d_model))
        return latent_pi, latent_vf, actor_state, critic_state

    def _step_prev(self, state: MemoryPolicyState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.prev_action.unsqueeze(1), state.prev_reward.unsqueeze(1)  # (B, 1, A), (B, 1, 1)

    def forward(  # type: ignore[override]
        self,
        obs: PyTorchObs,
        state: MemoryPolicyState,
        episode_starts: torch.Tensor,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, MemoryPolicyState]:
        """One step for B envs: obs (B, ...), episode_starts (B,) bool -> actions, values (B, 1), log_probs (B,), state.

        The returned state's ``prev_reward`` is zero; the caller sets the received reward with ``with_reward``.
        """
        starts = episode_starts.reshape(-1, 1).to(device=self.device, dtype=torch.bool)  # (B, 1)
        prev_actions, prev_rewards = self._step_prev(state)
        latent_pi, latent_vf, actor_state, critic_state = self._latents(obs, state, starts, prev_actions, prev_rewards)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        values = self.value_net(latent_vf)
        if self.prev_action_reward:
            new_state = MemoryPolicyState(
                actor_state,
                critic_state,
                actions.reshape(actions.shape[0], -1).float(),
                torch.zeros_like(state.prev_reward),
            )
        else:
            new_state = MemoryPolicyState(actor_state, critic_state, state.prev_action, state.prev_reward)
        return actions, values, log_prob, new_state

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, state: MemoryPolicyState, episode_starts: torch.Tensor
    ) -> tuple[Distribution, MemoryPolicyState]:
        """Action distribution for one step (obs (B, ...), episode_starts (B,)) and the state after it."""
        starts = episode_starts.reshape(-1, 1).to(device=self.device, dtype=torch.bool)
        prev_actions, prev_rewards = self._step_prev(state)
        latent_pi, _, actor_state, critic_state = self._latents(obs, state, starts, prev_actions, prev_rewards)
        return self._get_action_dist_from_latent(latent_pi), state._replace(actor=actor_state, critic=critic_state)

    def predict_values(  # type: ignore[override]
        self, obs: PyTorchObs, state: MemoryPolicyState, episode_starts: torch.Tensor
    ) -> torch.Tensor:
        """Values (B, 1) of one step: obs (B, ...), state for B envs, episode_starts (B,) bool."""
        starts = episode_starts.reshape(-1, 1).to(device=self.device, dtype=torch.bool)
        prev_actions, prev_rewards = self._step_prev(state)
        _, latent_vf, _, _ = self._latents(obs, state, starts, prev_actions, prev_rewards, need_actor=False)
        return self.value_net(latent_vf)

    def evaluate_sequences(
        self,
        obs: PyTorchObs,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        state: MemoryPolicyState,
        episode_starts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replay B stored sequences of T steps from their start states, one memory call with T steps.

        obs (B, T, ...) (or a dict of such), actions (B, T, A) raw, rewards (B, T) received after each action,
        episode_starts (B, T) bool -> values (B*T,), log_prob (B*T,), entropy (B*T,) or None.
        """
        batch, steps = episode_starts.shape
        if isinstance(obs, dict):
            flat_obs = {k: v.reshape(batch * steps, *v.shape[2:]) for k, v in obs.items()}  # (B*T, ...)
        else:
            flat_obs = obs.reshape(batch * steps, *obs.shape[2:])  # (B*T, ...)
        if self.prev_action_reward:
            prev_actions = torch.cat([state.prev_action.unsqueeze(1), actions[:, :-1]], dim=1)  # (B, T, A)
            prev_rewards = torch.cat([state.prev_reward.unsqueeze(1), rewards[:, :-1].unsqueeze(-1)], dim=1)  # (B, T, 1)
        else:
            prev_actions = prev_rewards = state.prev_action.unsqueeze(1)  # (B, 1, 0): unused
        latent_pi, latent_vf, _, _ = self._latents(flat_obs, state, episode_starts, prev_actions, prev_rewards)
        distribution = self._get_action_dist_from_latent(latent_pi)
        flat_actions = actions.reshape(batch * steps, *actions.shape[2:])  # (B*T, A)
        if isinstance(self.action_space, spaces.Discrete):
            flat_actions = flat_actions.reshape(-1).long()
        log_prob = distribution.log_prob(flat_actions)
        values = self.value_net(latent_vf).flatten()
        return values, log_prob, distribution.entropy()

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("a memory policy evaluates whole sequences: use evaluate_sequences(obs, actions, ...)")

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError("a memory policy needs its state: use predict(observation, state, episode_start)")

    # ------------------------------------------------------------------ user-facing predict

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: MemoryPolicyState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, MemoryPolicyState]:
        """Actions for one step of one or several envs, and the state to pass to the next call.

        :param observation: one observation or a batch of n_envs (as a VecEnv returns them)
        :param state: the state returned by the previous call; None means the initial state
        :param episode_start: (n_envs,) bool, True where the observation begins a new episode
            (default: True for every env when ``state`` is None, else False)
        :return: actions (numpy, clipped to a Box space), next state (same structure, numpy leaves)
        """
        self.set_training_mode(False)
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
        n_envs = first.shape[0]
        if state is None:
            torch_state = self.initial_state(n_envs)
        else:
            torch_state = tree_map(lambda leaf: torch.as_tensor(leaf, device=self.device), state)
            leaves = [leaf for leaf in state_leaves(torch_state) if leaf is not None]
            bad = [tuple(leaf.shape) for leaf in leaves if leaf.dim() == 0 or leaf.shape[0] != n_envs]
            if bad:
                raise ValueError(
                    f"predict 'state' holds tensors of shapes {bad[:3]} but the observation batch has {n_envs} env(s); "
                    "pass the state returned for the same number of envs, or state=None to start fresh"
                )
        if episode_start is None:
            # A fresh state begins an episode; a carried one continues it.
            starts = torch.full((n_envs,), state is None, dtype=torch.bool, device=self.device)
        else:
            starts_np = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts_np.shape[0] != n_envs:
                raise ValueError(f"predict 'episode_start' has {starts_np.shape[0]} entries for {n_envs} env(s)")
            starts = torch.as_tensor(starts_np, device=self.device)
        with torch.no_grad():
            actions, _, _, new_state = self.forward(obs_tensor, torch_state, starts, deterministic=deterministic)
        out_state = tree_map(lambda leaf: leaf.cpu().numpy(), new_state)
        actions_np = actions.cpu().numpy().reshape((-1, *self.action_space.shape))
        if isinstance(self.action_space, spaces.Box):
            if self.squash_output:
                actions_np = self.unscale_action(actions_np)
            else:
                actions_np = np.clip(actions_np, self.action_space.low, self.action_space.high)
        if not vectorized:
            actions_np = actions_np.squeeze(axis=0)
        return actions_np, out_state

    def memory_diagnostics(self) -> dict[str, float]:
        """Scalars from the memories' last forward pass, keyed ``memory/<name>`` (``memory/critic_<name>``)."""
        out: dict[str, float] = {}
        for prefix, module in (("", self.memory), ("critic_", self.vf_memory)):
            diag = getattr(module, "diagnostics", None)
            if not callable(diag):
                continue
            for key, value in (diag() or {}).items():
                name = str(key).removeprefix("memory/")
                try:
                    out[f"memory/{prefix}{name}"] = float(value)
                except (TypeError, ValueError):
                    continue
        return out


class MlpMemoryPolicy(MemoryActorCriticPolicy):
    """Observations -> default extractor (flatten, or the project's extractor for symbolic grids) -> memory -> heads."""


class CnnMemoryPolicy(MemoryActorCriticPolicy):
    """Image observations -> CNN (NatureCNN, or the project's extractor for small symbolic grids) -> memory -> heads."""

    fallback_extractor = NatureCNN


class MultiInputMemoryPolicy(MemoryActorCriticPolicy):
    """Dict observations -> SB3 CombinedExtractor -> memory -> heads."""

    fallback_extractor = CombinedExtractor
