"""The consensus of several members and the frames they disagree on: pure numpy, no Dask, no training."""

import numpy as np
import pytest

from posehub.ensemble import consensus as c


def gaussian(h, w, x, y, sigma=1.5, peak=1.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


def test_peak_is_refined_to_sub_pixel_and_scaled_by_the_stride():
    pts, val = c.refine_peaks(gaussian(24, 32, 10.3, 7.6)[None], stride=4)
    assert pts[0] == pytest.approx([10.3 * 4, 7.6 * 4], abs=0.1 * 4)
    assert abs(pts[0, 0] - 40) > 0.5  # not just the argmax
    assert 0.9 < val[0] <= 1.0  # the highest cell of the map


def test_consensus_averages_the_members_confidence_maps():
    # 2 members, 1 frame, 2 body parts; the first body part's peaks lie 2 cells apart, the second is empty
    m0 = np.stack([gaussian(24, 32, 10, 8), np.zeros((24, 32))])[None]
    m1 = np.stack([gaussian(24, 32, 12, 8), np.zeros((24, 32))])[None]
    out = c.from_confmaps([m0, m1], stride=2.0)
    assert out.method == "confmaps" and out.points.shape == (1, 2, 2)
    assert out.points[0, 0] == pytest.approx([22.0, 16.0], abs=0.2)  # between the two: cell 11, times 2
    assert np.isnan(out.points[0, 1]).all() and out.scores[0, 1] == 0  # nothing above zero: missing
    assert 0 < out.scores[0, 0] <= 1
    with pytest.raises(ValueError, match="differ in shape"):
        c.from_confmaps([m0, m0[..., :16]], stride=2.0)


def test_combine_uses_maps_only_when_every_member_has_them():
    maps = np.stack([gaussian(24, 32, 10, 8)])[None]
    a = {"points": np.array([[[20.0, 16.0]]]), "scores": np.ones((1, 1)), "confmaps": maps, "stride": 2.0}
    b = {**a, "points": np.array([[[24.0, 16.0]]])}
    assert c.combine([a, b]).method == "confmaps"
    assert c.combine([a, {**b, "confmaps": None}]).method == "keypoints"


def test_weighted_median():
    assert c.weighted_median([0, 10, 100], [1, 1, 1]) == 10
    assert c.weighted_median([0, 10, 100], [0.1, 0.1, 0.9]) == 100
    assert c.weighted_median([0, 10], [1, 1]) == 5  # the plain median for equal weights
    assert c.weighted_median([0, np.nan, 4], [1, 5, 1]) == 2  # NaN left out
    assert np.isnan(c.weighted_median([np.nan], [1]))


def test_consensus_of_keypoints_is_the_confidence_weighted_median():
    # 3 members, 1 frame, 3 body parts
    pts = np.array([[[[10, 10], [5, 5], [np.nan, np.nan]]],
                    [[[12, 11], [6, 5], [np.nan, np.nan]]],
                    [[[90, 90], [np.nan, np.nan], [np.nan, np.nan]]]], dtype=float)
    scores = np.array([[[0.9, 0.0, 0.0]], [[0.8, 0.0, 0.0]], [[0.2, 0.7, 0.1]]])
    out = c.from_keypoints(pts, scores)
    assert out.method == "keypoints"
    assert out.points[0, 0] == pytest.approx([12, 11])  # the outlier's weight is too small to pull it
    assert out.points[0, 1] == pytest.approx([5.5, 5])  # both finders have zero confidence: equal weights
    assert np.isnan(out.points[0, 2]).all()  # nobody found it
    assert out.scores[0, 0] == pytest.approx((0.9 + 0.8 + 0.2) / 3)
    assert out.scores[0, 2] == 0  # the missing keypoint counts 0, the score of the one that is NaN is ignored


def test_confidence_weights_decide_between_members():
    pts = np.array([[[[0, 0]]], [[[10, 10]]]], dtype=float)
    assert c.from_keypoints(pts, np.array([[[0.9]], [[0.1]]])).points[0, 0] == pytest.approx([0, 0])
    assert c.from_keypoints(pts, np.array([[[0.1]], [[0.9]]])).points[0, 0] == pytest.approx([10, 10])


def members_agreeing(n_members=3, n_frames=6, n_bp=4, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(50, 400, (n_frames, n_bp, 2))
    return truth[None] + rng.normal(0, 0.5, (n_members, n_frames, n_bp, 2))


def test_a_frame_where_one_member_is_far_off_ranks_first():
    pts = members_agreeing()
    pts[1, 4, 2] += [150, -80]  # member 1 puts body part 2 of frame 4 far away
    cons = c.from_keypoints(pts, np.ones(pts.shape[:-1]))
    score = c.disagreement(pts, cons.points, cap_px=800)
    ranked = c.rank(score, ["video"] * 6, range(6))
    assert ranked[0]["frame"] == 4 and ranked[0]["rank"] == 1
    assert ranked[0]["score_px"] > 10 > max(r["score_px"] for r in ranked[1:])
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5, 6]


def test_missing_keypoints_count_as_the_most_disagreement():
    pts = members_agreeing()
    pts[1, 4, 2] += [150, -80]  # far off: distance ~170 px
    pts[0, 2, 1] = np.nan  # member 0 found nothing for body part 1 of frame 2
    pts[:, 5, 3] = np.nan  # nobody found body part 3 of frame 5
    cons = c.from_keypoints(pts, np.ones(pts.shape[:-1]))
    score = c.disagreement(pts, cons.points, cap_px=800)
    order = [r["frame"] for r in c.rank(score, ["test"] * 6, range(6))]
    assert order[:3] == [5, 2, 4]  # all members miss > one member misses (800 px) > one is 170 px off
    assert score[5] == pytest.approx(800 / 4, rel=0.01)  # one of 4 body parts at the cap for every member
    assert score[2] == pytest.approx(800 / 3 / 4, rel=0.02)


def test_ranking_ties_are_stable_and_lengths_checked():
    r = c.rank([1.0, 1.0, 2.0], ["video", "test", "test"], [7, 3, 1], ["v", "a", "b"])
    assert [(x["source"], x["frame"]) for x in r] == [("test", 1), ("test", 3), ("video", 7)]
    with pytest.raises(ValueError, match="same length"):
        c.rank([1.0], ["test", "test"], [1, 2])
