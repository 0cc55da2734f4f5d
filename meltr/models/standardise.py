"""Per-dimension standardisation of frame features, shared by both model families (a mixin of nn.Module).

Random-init backbone features are a large constant plus a small clip-dependent part; unscaled, the constant
swamps the first projection and the heads sit on a plateau. The statistics are set from the training clips
(`set_feature_stats`) and saved with the weights as the buffers `feature_mean` and `feature_std`.
"""
from __future__ import annotations

import torch


class StandardisedFeatures:
    def init_feature_stats(self, feature_dim: int) -> None:
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    @torch.no_grad()
    def set_feature_stats(self, video: torch.Tensor) -> None:
        """Standardise frame features with the mean and std of `video` (clips, frames, dim): the training set."""
        flat = video.reshape(-1, video.shape[-1]).to(self.feature_mean)
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0, unbiased=False).clamp(min=1e-6))

    def standardise(self, video: torch.Tensor) -> torch.Tensor:
        return (video - self.feature_mean) / self.feature_std
