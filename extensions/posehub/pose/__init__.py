"""Pose estimation in PoseHub: one labels model, a deterministic split, trainers for SLEAP and
DeepLabCut behind one interface, and the pixel-error metrics of the SLEAP vs DeepLabCut study.

    from posehub import pose
    labels = pose.load_labels("~/buckets/openfield-demo/labeled-data/m4s1/CollectedData_Pranav.csv")
    result = pose.train_and_evaluate(labels, "sleap", params={"epochs": 3}, seed=0)
    result.metrics["all"]["mean_px"]

    # frames an ensemble ranked to label next (posehub.pose.labelling), once labelled, with the old labels
    both = pose.merge_labels(labels, pose.load_labels("label-next/label_next.slp"))
"""

from .labels import Labels, LabelsError, load as load_labels, merge as merge_labels
from .split import Split, split

__all__ = ["Labels", "LabelsError", "Split", "load_labels", "merge_labels", "split", "train_and_evaluate"]


def train_and_evaluate(*args, **kwargs):
    from .run import train_and_evaluate as run

    return run(*args, **kwargs)
