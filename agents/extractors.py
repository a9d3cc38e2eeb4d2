"""Features extractors for small symbolic grids (MiniGrid views, ``hqlt/PassiveVisualMatch``).

SB3's ``NatureCNN`` wants images of at least 36 x 36 pixels; the grids here are 3 x 3 to 7 x 7 cells whose values are
category indices (object type, colour, state), not intensities. ``SymbolicGridExtractor`` embeds each channel's index
(one table per channel) and runs a small same-padded conv net and a linear layer.

Embedding then the first convolution is one linear map of the one-hot cells, so when gradients are needed the
extractor folds the tables into the first kernel and convolves the one-hot grid instead: the same function and the
same parameters, without the embedding's scatter-add backward and without a gradient for the conv's input (about a
fifth less time for a training minibatch). Without gradients (rollouts) the plain embedding path is the faster one.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

_MAX_VOCAB = 1024  # largest index + 1 accepted per channel
_MIN_IMAGE_SIDE = 36  # NatureCNN's smallest input


class SymbolicGridExtractor(BaseFeaturesExtractor):
    """Embedding per channel index -> two 3x3 convs (same padding) -> linear -> ReLU.

    Input: observations of a ``Box`` of shape (H, W, C) (channels last) holding integer indices in
    ``[0, high[..., c].max()]`` for channel c (SB3 hands them over as floats; they are rounded and clipped).

    Args:
        observation_space: the (H, W, C) Box; its ``high`` gives each channel's vocabulary (largest index + 1).
        features_dim: size of the output features.
        embed_dim: embedding size per channel (a cell becomes C * embed_dim numbers).
        hidden_channels: channels of the two conv layers.
    """

    def __init__(
        self, observation_space: spaces.Box, features_dim: int = 128, embed_dim: int = 8, hidden_channels: int = 32
    ) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                f"SymbolicGridExtractor: observation_space must be a Box of shape (H, W, C), got {observation_space}; "
                "for flat vectors use SB3's default FlattenExtractor"
            )
        high = np.asarray(observation_space.high)
        if not np.all(np.isfinite(high)) or np.any(np.asarray(observation_space.low) < 0) or high.max() >= _MAX_VOCAB:
            raise ValueError(
                "SymbolicGridExtractor: observation_space bounds must be finite category indices in "
                f"[0, {_MAX_VOCAB - 1}], got low={observation_space.low.min()}, high={high.max()}"
            )
        for name, value in (("features_dim", features_dim), ("embed_dim", embed_dim), ("hidden_channels", hidden_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SymbolicGridExtractor: {name} must be an integer >= 1, got {value!r}")
        super().__init__(observation_space, features_dim)
        h, w, c = observation_space.shape
        vocab = [int(high[..., i].max()) + 1 for i in range(c)]
        self.register_buffer("offsets", torch.tensor(np.cumsum([0, *vocab[:-1]]), dtype=torch.long), persistent=False)
        self.register_buffer("max_index", torch.tensor([v - 1 for v in vocab], dtype=torch.float32), persistent=False)
        # channel_of[i]: the channel whose table holds row i of the embedding (for folding it into the first kernel).
        channel_of = np.repeat(np.arange(c), vocab)
        self.register_buffer("channel_of", torch.as_tensor(channel_of, dtype=torch.long), persistent=False)
        self.embed = nn.Embedding(sum(vocab), embed_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(c * embed_dim, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.linear = nn.Sequential(nn.Linear(hidden_channels * h * w, features_dim), nn.ReLU())
        self._after_first_conv = tuple(self.conv)[1:]  # plain tuple: not a second registration of the modules

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """observations: (B, H, W, C) indices (any dtype) -> features (B, features_dim)."""
        b, h, w, c = observations.shape
        idx = torch.minimum(observations.float().round().clamp_min(0), self.max_index).long() + self.offsets  # (B, H, W, C)
        if torch.is_grad_enabled():
            x = self._first_conv_one_hot(idx)  # (B, O, H, W)
            for layer in self._after_first_conv:
                x = layer(x)
            return self.linear(x)
        x = self.embed(idx)  # (B, H, W, C, E)
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # (B, C * E, H, W)
        return self.linear(self.conv(x))

    def _first_conv_one_hot(self, idx: torch.Tensor) -> torch.Tensor:
        """conv1(embed(idx)) as a convolution of the one-hot grid [B, V, H, W] with the kernel
        K[o, i] = sum_e W1[o, channel_of(i) * E + e] * embed[i, e] (V = all channels' rows)."""
        b, h, w, c = idx.shape
        conv1 = self.conv[0]
        vocab, e = self.embed.weight.shape
        one_hot = idx.new_zeros((b, vocab, h, w), dtype=conv1.weight.dtype)
        one_hot.scatter_(1, idx.permute(0, 3, 1, 2), 1.0)  # (B, V, H, W): C ones per cell
        w1 = conv1.weight.view(conv1.out_channels, c, e, *conv1.kernel_size)[:, self.channel_of]  # (O, V, E, kh, kw)
        kernel = torch.einsum("ovekl,ve->ovkl", w1, self.embed.weight)  # (O, V, kh, kw)
        return conv1._conv_forward(one_hot, kernel, conv1.bias)  # (B, O, H, W)


def default_extractor_for(observation_space: spaces.Space) -> tuple[type[BaseFeaturesExtractor], dict] | None:
    """The extractor these environments should use by default, as ``(class, kwargs)``, or None for SB3's default.

    A 3-D Box of integers smaller than an image NatureCNN can take (either side < 36), with bounds inside
    ``[0, 1023]``, is a symbolic grid -> ``SymbolicGridExtractor``. Flat vectors, real images and other spaces -> None.
    """
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
        return None
    if not np.issubdtype(observation_space.dtype, np.integer):
        return None
    h, w, _ = observation_space.shape
    if min(h, w) >= _MIN_IMAGE_SIDE:
        return None
    if np.any(observation_space.low < 0) or np.any(observation_space.high >= _MAX_VOCAB):
        return None
    return SymbolicGridExtractor, {"features_dim": 128}
