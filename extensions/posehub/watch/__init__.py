"""Watched folders: every new video in a bucket prefix analysed once, charged to the watch's owner.

:mod:`~.policy` (pure: what a watch may be, what is new), :mod:`~.store` (watches and the videos they
found, in the ledger's database), :mod:`~.sources` (listing local buckets and S3 prefixes),
:mod:`~.runner` and :mod:`~.job` (one video analysed as its owner on Dask Gateway), :mod:`~.service`
(the hub service: the polling loop, the page and the API), :mod:`~.client` (the API from a workspace).
"""
