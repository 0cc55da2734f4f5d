"""Frame features: the frame-difference channels and frames stacked into one token."""
import numpy as np
import pytest

from meltr.errors import MeltrError
from meltr.config import FeatureConfig
from meltr.features.extract import build_backbone, embed_frames

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


def test_frames_per_token_concatenates_consecutive_frames():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(2, 6, 32, 32, 3), dtype=np.uint8)
    one, three = FeatureConfig(num_frames=6), FeatureConfig(num_frames=6, frames_per_token=3)
    model = build_backbone(one).eval()
    per_frame = embed_frames(model, frames, one)
    stacked = embed_frames(model, frames, three)
    assert stacked.shape == (2, 2, 3 * per_frame.shape[-1])
    np.testing.assert_allclose(stacked, per_frame.reshape(2, 2, -1), rtol=1e-5, atol=1e-5)


def test_frames_per_token_must_divide_num_frames():
    with pytest.raises(MeltrError, match="frames_per_token"):
        FeatureConfig(num_frames=8, frames_per_token=3)


def test_a_segment_past_the_end_of_its_video_is_cut_counted_and_listed(tmp_path):
    import json

    from meltr.data.synth.msrvtt import synth_msrvtt
    from meltr.features.extract import extract_features

    synth_msrvtt(tmp_path / "raw", n_train=2, n_test=1, seconds=2.0, size=32, captions_per_video=1)
    video = str(tmp_path / "raw/videos/video0.mp4")
    records = [{"video_id": "inside", "video": video, "start": 0.0, "end": 1.5, "fps": None},
               {"video_id": "overrun", "video": video, "start": 0.5, "end": 9.0, "fps": None}]
    summary = extract_features(records, str(tmp_path / "store"), FeatureConfig(num_frames=4), progress=False)
    assert summary["videos"] == 2 and summary["clamped"] == 1
    index = json.loads((tmp_path / "store/index.json").read_text())
    assert [c["video_id"] for c in index["clamped"]] == ["overrun"]
    assert 6.9 < index["clamped"][0]["past_end_s"] < 7.1  # the 2-second clip ends 7 s before 9.0


def test_a_store_with_non_finite_features_is_refused_before_it_is_written(tmp_path):
    from meltr.features.store import write_store

    feats = np.zeros((3, 2, 4), np.float32)
    feats[2, 1, 0] = np.inf
    with pytest.raises(MeltrError, match=r"features of 1 of 3 videos are not finite \(first: 'c'\)"):
        write_store(tmp_path / "store", ["a", "b", "c"], feats, {})
    assert not (tmp_path / "store").exists() and list(tmp_path.iterdir()) == []
