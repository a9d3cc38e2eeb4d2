"""PPO with memory for Stable-Baselines3."""
