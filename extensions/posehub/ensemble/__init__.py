"""Ensemble training on Dask: several models of one framework, each with its own seed, on the same split.

    from posehub import storage
    from posehub.ensemble import estimate, train_ensemble

    print(estimate("sleap", members=5, params={"epochs": 200}, price_per_hour=1.2))
    ens = train_ensemble(storage.url("openfield-demo", "labeled-data/m4s1/CollectedData_Pranav.csv"), "sleap",
                         members=5, config={"epochs": 200}, labels_fs=storage.filesystem("openfield-demo"),
                         video=storage.url("openfield-demo", "videos/m3v1mp4.mp4"),
                         video_fs=storage.filesystem("openfield-demo"))
    ens.progress            # per member: state, epoch/epochs, attempt, worker
    ens.results().table()   # members' and the consensus's test error (px)

Each member is one Dask task asking for one GPU (or one ``member`` slot on CPU
workers), training in a child process; its model and metrics go under the
ensemble's folder in the user's home prefix, with ``ensemble.json``,
``consensus.csv`` (the consensus track on the test and video frames) and
``label_next.csv`` (frames where the members disagree most).

Only :mod:`posehub.ensemble.handle` needs ``distributed``, and only once an
ensemble starts; :mod:`~.spec`, :mod:`~.consensus`, :mod:`~.estimate` and
:mod:`~.results` need numpy (and pandas for tables).
"""

from .estimate import Estimate, estimate
from .handle import Ensemble, train_ensemble
from .results import EnsembleResult, MemberResult
from .spec import EnsembleError, member_resources

__all__ = ["Ensemble", "EnsembleError", "EnsembleResult", "Estimate", "MemberResult", "estimate",
           "member_resources", "train_ensemble"]
