"""The ensemble widget's checks and sentences (posehub.ensemble.form): pure, no widgets."""

import json

import pytest

from posehub.ensemble import form

PROFILES = [{"slug": "pose-cpu", "display_name": "Pose (CPU)", "cpu": 4, "memory": "16G", "gpus": 0,
             "price_per_hour": 0.2},
            {"slug": "gpu", "display_name": "One GPU", "cpu": 8, "memory": "32G", "gpus": 1, "price_per_hour": 1.21}]
GOOD = dict(labels=("openfield-demo", "labeled-data/m4s1/CollectedData_Pranav.csv"), framework="sleap", members=3,
            epochs=5, profile="gpu", profiles=PROFILES)


def test_a_good_form_becomes_a_request():
    req, errors = form.check(**GOOD, params={"scale": 0.5})
    assert errors == []
    assert req.members == 3 and req.profile["slug"] == "gpu" and req.params == {"scale": 0.5, "epochs": 5}
    assert req.video is None and req.video_frames == 0


@pytest.mark.parametrize("change, message", [
    ({"labels": None}, "Labels: pick a labels file"),
    ({"framework": "openpose"}, "Framework: pick one of SLEAP (U-Net), DeepLabCut (ResNet-50), got 'openpose'"),
    ({"members": 0}, "Members must be from 1 to 32, got 0"),
    ({"members": "three"}, "Members must be a whole number from 1 to 32, got 'three'"),
    ({"epochs": -1}, "Epochs must be from 1 to 10000, got -1"),
    ({"profile": "tpu"}, "Worker profile: pick one of pose-cpu, gpu, got 'tpu'"),
    ({"profiles": []}, "Worker profile: no worker profile is open to you"),
])
def test_each_bad_field_is_named(change, message):
    req, errors = form.check(**{**GOOD, **change})
    assert req is None
    assert any(message in e for e in errors), errors


def test_profiles_come_from_the_workspace():
    env = {"POSEHUB_WORKER_PROFILES": json.dumps(PROFILES)}
    assert [p["slug"] for p in form.worker_profiles(env)] == ["pose-cpu", "gpu"]
    assert form.worker_profiles({}) == [] and form.worker_profiles({"POSEHUB_WORKER_PROFILES": "{oops"}) == []
    assert form.profile_label(PROFILES[1]) == "One GPU (8 CPU · 32G · 1 GPU · $1.21/h per worker)"


def test_money_sentences():
    assert form.budget_line(None) == "Budget: unknown (the cost service did not answer)"
    line = form.budget_line({"period": "2026-11", "remaining": "12.50", "budget": "300.00", "percent_used": "95.8"})
    assert line == "Budget for 2026-11: $12.50 left of $300.00 (95.8 % used)"
    assert form.cost_so_far(1800, 1.21) == "$0.60 so far (30.0 worker-minutes)"
