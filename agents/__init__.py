"""PPO with memory for Stable-Baselines3: the algorithm, its policies, its rollout buffers.

>>> from agents import MemoryPPO
>>> model = MemoryPPO("MlpMemoryPolicy", "CartPole-v1", policy_kwargs=dict(memory="hqlt"))
"""

from agents.buffers import MemoryDictRolloutBuffer, MemoryRolloutBuffer, SequenceSamples
from agents.callbacks import DecayAfter, DecayLROnSuccess, DecayOnSuccess
from agents.policies import (
    CnnMemoryPolicy,
    MemoryActorCriticPolicy,
    MemoryPolicyState,
    MlpMemoryPolicy,
    MultiInputMemoryPolicy,
)
from agents.ppo import MemoryPPO

__all__ = [
    "CnnMemoryPolicy",
    "DecayAfter",
    "DecayLROnSuccess",
    "DecayOnSuccess",
    "MemoryActorCriticPolicy",
    "MemoryDictRolloutBuffer",
    "MemoryPPO",
    "MemoryPolicyState",
    "MemoryRolloutBuffer",
    "MlpMemoryPolicy",
    "MultiInputMemoryPolicy",
    "SequenceSamples",
]
