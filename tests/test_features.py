"""Frame features: the pooled token layout and the frame-difference channels."""
import numpy as np
import pytest

from meltr.features.extract import FeatureConfig, build_backbone, embed_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frame_diff_appends_the_change_from_the_previous_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 3, 32, 32, 3), dtype=np.uint8)
    frames[:, 2] = frames[:, 1]  # a still frame: no change
    plain_cfg, diff_cfg = FeatureConfig(), FeatureConfig(frame_diff=True)
    model = build_backbone(plain_cfg).eval()
    plain = embed_frames(model, frames, plain_cfg)
    both = embed_frames(model, frames, diff_cfg)
    d = plain.shape[-1]
    assert both.shape == (2, 3, 2 * d)
    np.testing.assert_allclose(both[..., :d], plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both[:, 0, d:], 0.0)
    np.testing.assert_allclose(both[:, 1, d:], plain[:, 1] - plain[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(both[:, 2, d:], 0.0, atol=1e-5)
