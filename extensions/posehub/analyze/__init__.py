"""Batch video analysis: every frame of many videos through a trained model, in chunks on a Dask cluster.

    from posehub.analyze import analyze

    job = analyze("~/buckets/lab/models/sleap-run", "~/buckets/lab/videos/*.mp4", client=client)
    job.progress()          # per video: chunks and frames done, status
    job.wait()
    job.table()             # per video: status, frames, mean confidence, share of low-confidence frames

Each video is cut into chunks of frames (:func:`~.plan.chunks`), each chunk
one Dask task predicting in the worker's process (:mod:`~.task`,
:mod:`~.infer`); the client joins a video's chunks in frame order as soon as
they are all in and writes, beside the video or under ``out``,
``<stem>.posehub.csv``, DeepLabCut's ``<stem>DLC_posehub.h5``/``.csv`` or
SLEAP's ``<stem>.predictions.slp`` (by the model's tool) and the record
``<stem>.analysis.json`` (:mod:`~.outputs`). :func:`~.infer.predict_video`
predicts one video in one pass in this process: the chunked analysis gives
the same numbers.

Only :mod:`~.handle` and :mod:`~.task` need ``distributed``, :mod:`~.infer`
OpenCV and the tool's packages (the pose image); :mod:`~.plan` and the pure
builders of :mod:`~.outputs` need numpy (and pandas for DeepLabCut's table).
"""

from .handle import Analysis, analyze
from .infer import predict_range, predict_video
from .outputs import VideoResult
from .plan import AnalyzeError, chunks, join

__all__ = ["Analysis", "AnalyzeError", "VideoResult", "analyze", "chunks", "join", "predict_range",
           "predict_video"]
