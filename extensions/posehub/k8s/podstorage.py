"""A user's buckets in a Kubernetes pod (their server's, and their Dask workers'), as plain data (no I/O).

The same plan as on one machine (:mod:`posehub.hub.s3plan`): the buckets the user's groups see and their
own home prefix, one set of short-lived STS credentials limited by the same session policy, renewed by
the hub and served at its credential endpoint (:mod:`posehub.hub.s3broker`) to whoever shows the lease's secret:
a server's sidecar, and the sidecars of the Dask workers of clusters asked from that server (the cluster
option ``storage_lease``, :mod:`posehub.gateway.kube`).

In the pod, the **s3fs-fuse sidecar** ``posehub-storage`` (:mod:`posehub.k8s.podsync`; deploy/README.md says
why not the Mountpoint CSI driver) holds the secret, in its own environment only:

* it mounts each bucket with the same s3fs command line as on one machine (read-only buckets with ``ro``,
  and a session policy that allows reading only), credentials from the endpoint, renewed by s3fs itself;
  the mounts reach the workspace container through two ``emptyDir`` volumes with mount propagation
  (``Bidirectional`` in the sidecar, which needs it privileged; ``HostToContainer`` in the workspace),
  at the same places as on one machine: ``~/buckets/<bucket>`` and ``~/home-bucket``;
* it writes the manifest :mod:`posehub.storage` reads (``$POSEHUB_STORAGE``, in a third, read-only
  ``emptyDir``), with the credentials renewed before they end, so Python and Dask work unchanged.

The workspace container is not privileged, has its own process namespace (it cannot read the sidecar's
environment) and gets no Kubernetes API token; what it can reach is the user's own credentials.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import PurePosixPath

from ..config import PoseHubConfig
from ..hub import s3plan

POD_HOME = PurePosixPath("/home/jovyan")  # the images' home (singleuser.storage's homeMountPath)
MANIFEST_DIR = "/run/posehub"
MANIFEST_PATH = f"{MANIFEST_DIR}/storage.json"  # $POSEHUB_STORAGE in the workspace and in Dask workers
SIDECAR = "posehub-storage"
# the Dask cluster option carrying the server's lease secret to its workers' sidecars (posehub.gateway.kube), and
# the dask-gateway client's default for it in the workspace (its config gateway.cluster.options)
LEASE_OPTION = "storage_lease"
LEASE_OPTION_ENV = "DASK_GATEWAY__CLUSTER__OPTIONS__STORAGE_LEASE"
# in the environment of the issuer (the hub pod; the gateway): the sidecar's image, the endpoint as pods reach it
SIDECAR_IMAGE_ENV = "POSEHUB_SIDECAR_IMAGE"
CREDENTIALS_URL_ENV = "POSEHUB_CREDENTIALS_URL"
# what the sidecar reads from its environment (set in the pod spec, never in the workspace container's)
ENDPOINT_ENV = "POSEHUB_CREDENTIALS_ENDPOINT"
MANIFEST_ENV = "POSEHUB_POD_MANIFEST"
BUCKETS_ENV = "POSEHUB_POD_BUCKETS"  # the plan (s3plan.BucketAccess fields), mounted as on one machine
# mount propagation volumes: where the sidecar mounts, and where the workspace sees them
TIMEOUT_ENV = "POSEHUB_MOUNT_TIMEOUT"
OPTIONS_ENV = "POSEHUB_MOUNT_OPTIONS"
MOUNT_ROOT = PurePosixPath("/mnt/posehub")  # in the sidecar: <root>/<mountpoint>, as under a home on one machine
# mount propagation volumes: volume -> the folder of the plan's mountpoints it holds ("buckets/<name>", "home-bucket")
VOLUMES = {"posehub-buckets": "buckets", "posehub-home-bucket": "home-bucket"}
UID, GID = 1000, 100  # jovyan:users in the profiles' images: the mounts' files show as theirs
MANIFEST_VOLUME = "posehub-manifest"


class PodStorageError(ValueError):
    """Buckets that cannot reach a pod; ``str()`` names the key and what to do."""


def check(cfg: PoseHubConfig) -> None:
    """Refuse what pods cannot have: static keys (they would have to be copied into every pod that may read
    the bucket, and allow more than the config does), or S3 buckets without ``buckets.sts.role_arn``."""
    b = cfg["buckets"]
    if b["backend"] != "s3" or not (b["shared"] or b.get("home")):
        return
    keyed = [x["name"] for x in [*b["shared"], *([b["home"]] if b.get("home") else [])]
             if x.get("keys_file") or x.get("keys_env")]
    if keyed:
        raise PodStorageError(f"buckets ({', '.join(keyed)}): static keys (keys_file/keys_env) are not used on "
                              "Kubernetes, where each server gets short-lived credentials from STS: remove them and "
                              "set buckets.sts.role_arn to the users' role (deploy/terraform's users_role_arn)")
    if not b["sts"]["role_arn"]:
        raise PodStorageError("buckets.sts.role_arn: on Kubernetes every server's credentials come from STS: set it "
                              "to the users' role (deploy/terraform's users_role_arn output)")


def accesses(cfg: PoseHubConfig, username: str, groups) -> list[s3plan.BucketAccess]:
    """The buckets of ``username`` (with ``groups``): exactly one machine's plan."""
    b = cfg["buckets"]
    return s3plan.plan(cfg, username, groups) if b["backend"] == "s3" else []


def manifest(access_list: list[s3plan.BucketAccess]) -> dict:
    """The manifest without credentials (the sidecar adds them, renewed): every bucket mounted by the sidecar."""
    return {"buckets": [s3plan.manifest_entry(a, POD_HOME, mounted=True, credentials="sts") for a in access_list]}


def sidecar(cfg: PoseHubConfig, access_list: list[s3plan.BucketAccess], *, image: str, endpoint: str,
            secret: str) -> dict:
    """The ``posehub-storage`` container of a pod whose owner has ``access_list``, with the lease's secret."""
    b = cfg["buckets"]
    return {
        "name": SIDECAR,
        "image": image,
        "command": ["python3", "-m", "posehub.k8s.podsync"],
        "env": [
            {"name": ENDPOINT_ENV, "value": endpoint},
            {"name": s3plan.S3FS_CREDENTIALS_ENV, "value": f"?token={secret}"},  # (s3broker.Lease.relative_uri)
            {"name": MANIFEST_ENV, "value": json.dumps(manifest(access_list))},
            {"name": BUCKETS_ENV, "value": json.dumps([dataclasses.asdict(a) for a in access_list])},
            {"name": TIMEOUT_ENV, "value": str(b["mount"]["timeout_seconds"])},
            {"name": OPTIONS_ENV, "value": json.dumps(b["mount"]["options"])},
        ],
        # FUSE and mounts that propagate to the workspace container need a privileged container
        "securityContext": {"privileged": True, "runAsUser": 0},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": MANIFEST_VOLUME, "mountPath": MANIFEST_DIR}]
                        + [{"name": v, "mountPath": str(MOUNT_ROOT / sub), "mountPropagation": "Bidirectional"}
                           for v, sub in VOLUMES.items()],
    }


def volumes() -> list[dict]:
    return [{"name": v, "emptyDir": {}} for v in (MANIFEST_VOLUME, *VOLUMES)]


def workspace_mounts(home: PurePosixPath = POD_HOME) -> list[dict]:
    """The workspace container's (or a Dask worker's) view: the manifest read-only, the buckets where they
    are on one machine."""
    return ([{"name": MANIFEST_VOLUME, "mountPath": MANIFEST_DIR, "readOnly": True}]
            + [{"name": v, "mountPath": str(home / sub), "mountPropagation": "HostToContainer"}
               for v, sub in VOLUMES.items()])


def workspace_env(secret: str = "") -> dict:
    """``$POSEHUB_STORAGE``; in a server (``secret``), also the Dask clusters' default ``storage_lease`` option,
    so that its clusters' workers reach the same buckets. The secret gets the owner's own credentials only,
    which the workspace holds anyway (in the manifest)."""
    from ..storage import MANIFEST_ENV as STORAGE_ENV

    return {STORAGE_ENV: MANIFEST_PATH, **({LEASE_OPTION_ENV: secret} if secret else {})}


def valid_secret(secret: str) -> bool:
    """What :class:`posehub.hub.s3broker.Lease` makes (``secrets.token_urlsafe(32)``)."""
    return 32 <= len(secret) <= 128 and all(c.isalnum() or c in "-_" for c in secret)


def pod_pieces(cfg: PoseHubConfig, username: str, groups, *, image: str, endpoint: str, secret: str,
               server: bool = False) -> dict | None:
    """Everything a pod of ``username`` gets for storage (None without buckets): ``containers`` (the sidecar),
    ``volumes``, ``volume_mounts`` and ``env`` of the workspace container (a ``server``'s passes its lease on
    to the Dask clusters it asks for), and the ``accesses`` behind them."""
    access_list = accesses(cfg, username, groups)
    if not access_list:
        return None
    return {"accesses": access_list,
            "containers": [sidecar(cfg, access_list, image=image, endpoint=endpoint, secret=secret)],
            "volumes": volumes(), "volume_mounts": workspace_mounts(),
            "env": workspace_env(secret if server and cfg["dask"]["enabled"] else "")}

