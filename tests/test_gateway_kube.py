"""Dask Gateway on Kubernetes with PoseHub's rules (posehub.gateway.kube.PoseHubKubeBackend), through the real code.

The gateway's own ``KubeBackend`` runs as deployed: its ``setup`` makes the cache and starts the informer and the
sync loop, ``start_cluster`` makes DaskCluster objects, the informer's watch feeds them back into the cache
(``sync_cluster``), and Dask Gateway's controller (``KubeController.make_pod``) makes the worker pods the meter
is shown. Only the Kubernetes API is stubbed, at the client (``FakeKube``: the API server is outside our
control and none can be had here): objects created are stored and come back through the list and the watch.
The cost ledger is a real one, on SQLite in the test's folder.
"""

from __future__ import annotations

import asyncio
import copy
import json
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import yaml
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.kubernetes import backend as kube_backend
from kubernetes_asyncio.client import V1PodList
from kubernetes_asyncio.client.rest import ApiException
from traitlets.config import Config

from posehub.config import DEFAULT_CONFIG, load
from posehub.gateway.auth import PoseHubUser
from posehub.gateway.kube import PoseHubKubeBackend
from posehub.k8s import helm

NS, REG, TAG, INSTANCE = "posehub", "ghcr.io/posehub", "0.1.0", "posehub-test"
ALICE = PoseHubUser("alice")


def write_config(tmp_path, *, dask=None, budgets=None, buckets=None):
    """The embedded posehub.yaml, state (the ledger) in tmp_path, ``dask``/``budgets`` keys changed, ``buckets``
    replaced."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["hub"]["state_dir"] = str(tmp_path / "state")
    (tmp_path / "state").mkdir(exist_ok=True)  # made by `posehub up` where the hub runs
    raw["dask"].update(dask or {})
    raw["budgets"].update(budgets or {})
    if buckets:
        raw["buckets"] = buckets
    path = tmp_path / "posehub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class _Watch:
    """A watch response: one JSON event a line, as long as the fake API server sends them."""

    def __init__(self, events: asyncio.Queue):
        self.events, self.content = events, self

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def readline(self) -> bytes:
        return (json.dumps(await self.events.get()) + "\n").encode()


class FakeKube:
    """The Kubernetes API as the gateway's clients see it: DaskCluster objects (list, watch, create), pods (list)."""

    def __init__(self):
        self.clusters: dict[str, dict] = {}
        self.created: list[dict] = []
        self.pods: list[V1Pod] = []
        self.pod_lists: list[tuple] = []
        self.fail_pod_lists = 0
        self.deliver = True  # watch events sent as objects change; False: held back until release()
        self._held: list[dict] = []
        self._events: asyncio.Queue | None = None
        self._version = 0
        self.api_client = self
        self.rest_client = self.pool_manager = self

    # ApiClient
    def sanitize_for_serialization(self, obj):
        return obj

    async def close(self):
        pass

    # CustomObjectsApi
    async def list_cluster_custom_object(self, group, version, plural, label_selector="", watch=False, **kw):
        assert (group, plural, label_selector) == ("gateway.dask.org", "daskclusters",
                                                   f"gateway.dask.org/instance={INSTANCE}")
        if watch:
            self._events = self._events or asyncio.Queue()
            return _Watch(self._events)
        return {"items": copy.deepcopy(list(self.clusters.values())),
                "metadata": {"resourceVersion": str(self._version)}}

    async def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self._version += 1
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=namespace, resourceVersion=str(self._version),
                               creationTimestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.clusters[f"{namespace}.{obj['metadata']['name']}"] = obj
        self.created.append(obj)
        self._send({"type": "ADDED", "object": copy.deepcopy(obj)})
        return obj

    def modified(self, obj: dict) -> None:
        """The object changed on the server (as the controller updates a cluster's status)."""
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._send({"type": "MODIFIED", "object": copy.deepcopy(obj)})

    def _send(self, event):
        if self.deliver and self._events is not None:
            self._events.put_nowait(event)
        else:
            self._held.append(event)

    def release(self):
        self.deliver = True
        for event in self._held:
            self._events.put_nowait(event)
        self._held.clear()

    # CoreV1Api
    async def list_namespaced_pod(self, namespace, label_selector=""):
        self.pod_lists.append((namespace, label_selector))
        if self.fail_pod_lists:
            self.fail_pod_lists -= 1
            raise ApiException(status=503, reason="Service Unavailable")
        return V1PodList(items=list(self.pods))


@asynccontextmanager
async def gateway(tmp_path, monkeypatch, meter_interval=3600.0, kube=None, **changes):
    """A set-up PoseHubKubeBackend on FakeKube (its real ``setup`` and ``cleanup``); ``kube``: the API server of
    an earlier gateway (a restart)."""
    kube = kube or FakeKube()
    kube._events = None  # a new watch
    monkeypatch.setattr(kube_backend.config, "load_incluster_config", lambda: None)
    for name in ("ApiClient", "CoreV1Api", "CustomObjectsApi"):
        monkeypatch.setattr(kube_backend.client, name, lambda **kw: kube)
    c = Config()
    c.KubeClusterConfig.namespace = NS
    backend = PoseHubKubeBackend(config=c, posehub_config_file=str(write_config(tmp_path, **changes)),
                                 gateway_instance=INSTANCE, image_registry=REG, image_tag=TAG,
                                 meter_interval=meter_interval)
    await backend.setup(None)
    try:
        yield backend, kube
    finally:
        await backend.cleanup()


async def until(cond, what, timeout=10.0):
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def refusal(backend, user, options) -> str:
    with pytest.raises(PublicException) as e:
        await backend.start_cluster(user, options)
    return str(e.value)


# ---------------------------------------------------------------- limits and the budget


def test_a_cluster_over_the_limit_is_refused_with_the_users_sentence(tmp_path, monkeypatch):
    async def main():
        async with gateway(tmp_path, monkeypatch) as (backend, kube):
            first = await backend.start_cluster(ALICE, {"profile": "pose-cpu"})
            await until(lambda: first in backend.clusters, "the cluster in the informer's cache")
            assert backend._unsynced == {}  # the cache knows it now: counted from there
            message = await refusal(backend, ALICE, {"profile": "pose-cpu"})
            assert message == ("You already run 1 Dask cluster(s), the most you may run at once is 1. Shut one down "
                               "first (cluster.shutdown(), or dask_gateway.Gateway().stop_cluster(name)); "
                               f"running: {first}.")
            assert len(kube.created) == 1  # nothing made for the refused one
            assert await backend.start_cluster(PoseHubUser("bob"), {"profile": "pose-cpu"})  # per user
    asyncio.run(main())


def test_two_clusters_asked_at_once_only_one_is_made(tmp_path, monkeypatch):
    async def main():
        async with gateway(tmp_path, monkeypatch) as (backend, kube):
            kube.deliver = False  # the informer has not seen either yet: only the gateway's own record can tell
            results = await asyncio.gather(*(backend.start_cluster(ALICE, {"profile": "pose-cpu"}) for _ in range(2)),
                                           return_exceptions=True)
            made = [r for r in results if isinstance(r, str)]
            refused = [r for r in results if isinstance(r, PublicException)]
            assert len(made) == 1 and len(refused) == 1 and len(kube.created) == 1, results
            assert str(refused[0]).startswith("You already run 1 Dask cluster(s), the most you may run at once is 1")
            kube.release()
            await until(lambda: made[0] in backend.clusters, "the cluster in the cache")
            assert backend._unsynced == {}
            assert [r.name for r in backend._running("alice")] == made  # counted once
    asyncio.run(main())


def test_a_user_without_budget_left_is_refused(tmp_path, monkeypatch):
    async def main():
        from posehub.hub.costs import CostGate

        now = datetime.now(timezone.utc)
        ledger = CostGate(load(write_config(tmp_path))).ledger  # alice spent her $300: a closed span
        span = ledger.open_span("alice", "server", "", Decimal("18000"), profile="cpu-small",
                                start=now - timedelta(minutes=1))
        ledger.close_span(span.id, end=now)
        async with gateway(tmp_path, monkeypatch) as (backend, kube):
            message = await refusal(backend, ALICE, {"profile": "pose-cpu"})
            period = backend.gate.remaining("alice", []).period.label
            assert message == ("Not enough budget to start a Dask cluster of 'Pose estimation (CPU)' workers: one "
                               "worker needs $0.20 for a first block of 1 h at $0.20/h, and you have $0.00 left of "
                               f"$300.00 for {period}. Pick a cheaper worker profile, or ask "
                               f"{backend.posehub['hub']['admin_contact']} for more budget.")
            assert kube.created == []
    asyncio.run(main())


def test_a_profile_not_open_to_the_user_is_refused(tmp_path, monkeypatch):
    async def main():
        async with gateway(tmp_path, monkeypatch) as (backend, kube):
            message = await refusal(backend, ALICE, {"profile": "gpu"})
            assert message.startswith("Worker profile 'gpu' is not open to you. Profiles you may use: ")
            assert kube.created == []
    asyncio.run(main())


def test_an_allowed_cluster_gets_the_profiles_image_its_limit_and_the_owner(tmp_path, monkeypatch):
    async def main():  # $0.50 left, $0.20 an hour, blocks of 1 h: 2 workers (of dask.max_workers_per_user 4)
        async with gateway(tmp_path, monkeypatch, budgets={"default": 0.5}) as (backend, kube):
            name = await backend.start_cluster(ALICE, {"profile": "pose-cpu"})
            (obj,) = kube.created
            assert name == f"{NS}.{obj['metadata']['name']}" and obj["spec"]["username"] == "alice"
            assert obj["metadata"]["labels"]["gateway.dask.org/instance"] == INSTANCE
            conf = obj["spec"]["config"]
            assert conf["image"] == helm.image_ref(backend.posehub, "pose", REG, TAG) == f"{REG}/posehub-pose:{TAG}"
            assert conf["cluster_max_workers"] == 2
            assert conf["worker_extra_pod_annotations"] == {helm.USER_ANNOTATION: "alice"}
            assert conf["scheduler_extra_pod_annotations"] == {helm.USER_ANNOTATION: "alice"}
            assert conf["worker_extra_pod_labels"] == {helm.PROFILE_LABEL: "pose-cpu"}
            assert obj["spec"]["options"] == {"profile": "pose-cpu", "storage_lease": ""}
            await until(lambda: name in backend.clusters, "the cluster in the cache")
            # the gateway caps a scale request at the cluster's limit (KubeBackend.on_cluster_heartbeat)
            kube.patches = []
            async def patch(*args):
                kube.patches.append(args)
            kube.patch_namespaced_custom_object = patch
            await backend.on_cluster_heartbeat(name, {"count": 9, "active_workers": [], "closing_workers": [],
                                                      "closed_workers": []})
            assert kube.patches[0][-1] == [{"op": "add", "path": "/spec/replicas", "value": 2}]
    asyncio.run(main())


# ---------------------------------------------------------------- the meter


def heartbeat(active=(), closing=(), count=1) -> dict:
    """What a cluster's scheduler reports to the gateway (dask_gateway's scheduler_preload heartbeat)."""
    return {"count": count, "active_workers": list(active), "closing_workers": list(closing), "closed_workers": []}


def test_the_meter_charges_reported_workers_and_closes_their_spans_when_gone(tmp_path, monkeypatch):
    async def main():
        async with gateway(tmp_path, monkeypatch, meter_interval=0.05) as (backend, kube):
            ledger = backend.gate.ledger
            kube.patch_namespaced_custom_object = _ignore
            name = await backend.start_cluster(ALICE, {"profile": "pose-cpu"})
            await until(lambda: name in backend.clusters, "the cluster in the cache")
            before = datetime.now(timezone.utc)
            await backend.on_cluster_heartbeat(name, heartbeat(active=["w-1"], closing=["w-2"], count=2))
            await until(lambda: len(ledger.open_spans(user="alice", kind="dask-worker")) == 2, "two open spans")
            spans = {s.resource_id: s for s in ledger.open_spans(user="alice", kind="dask-worker")}
            assert sorted(spans) == [f"{name}/w-1", f"{name}/w-2"]  # the cluster's full name: what the enforcer stops
            span = spans[f"{name}/w-1"]
            assert span.rate == Decimal("0.20") and span.profile == "pose-cpu" and span.start >= before
            await backend.on_cluster_heartbeat(name, heartbeat(active=["w-1"]))  # w-2 has gone
            await until(lambda: len(ledger.open_spans(user="alice", kind="dask-worker")) == 1, "w-2 closed")
            assert ledger.open_spans(user="alice", kind="dask-worker")[0].id == span.id  # w-1 goes on, same span
            # the cluster stops (its object's phase, as the controller writes it): its workers' spans close
            obj = kube.clusters[name]
            obj["status"] = {"phase": "Stopped", "completionTime": datetime.now(timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")}
            kube.modified(obj)
            await until(lambda: not ledger.open_spans(user="alice", kind="dask-worker"), "the spans closed")
            (closed,) = [s for s in ledger.spans(backend.gate.remaining("alice", []).period, user="alice")
                         if s.kind == "dask-worker" and s.id == span.id]
            assert closed.end is not None and closed.end > closed.start
            assert kube.pod_lists == []  # no Kubernetes API call: the chart's gateway role may not list pods
    asyncio.run(main())


def test_after_a_gateway_restart_spans_wait_for_the_first_reports(tmp_path, monkeypatch):
    """A restarted gateway has no reports yet: it does not close the spans of workers that are still running."""
    async def main():
        async with gateway(tmp_path, monkeypatch, meter_interval=0.05) as (backend, kube):
            kube.patch_namespaced_custom_object = _ignore
            name = await backend.start_cluster(ALICE, {"profile": "pose-cpu"})
            await until(lambda: name in backend.clusters, "the cluster in the cache")
            obj = kube.clusters[name]
            obj["status"] = {"phase": "Running", "service": f"dask-{name.split('.')[1]}"}
            kube.modified(obj)
            await until(lambda: backend.clusters[name].status.name == "RUNNING", "running")
            await backend.on_cluster_heartbeat(name, heartbeat(active=["w-1"]))
            await until(lambda: backend.gate.ledger.open_spans(user="alice", kind="dask-worker"), "a span")
            (span,) = backend.gate.ledger.open_spans(user="alice", kind="dask-worker")
        async with gateway(tmp_path, monkeypatch, meter_interval=0.05, kube=kube) as (backend, kube):
            kube.patch_namespaced_custom_object = _ignore
            await until(lambda: name in backend.clusters, "the cluster in the new gateway's cache")
            await asyncio.sleep(0.3)  # several meter rounds, no report yet
            assert [s.id for s in backend.gate.ledger.open_spans(user="alice", kind="dask-worker")] == [span.id]
            await backend.on_cluster_heartbeat(name, heartbeat(active=[]))
            await until(lambda: not backend.gate.ledger.open_spans(user="alice", kind="dask-worker"), "closed")
    asyncio.run(main())


async def _ignore(*args, **kwargs):
    return None


# ---------------------------------------------------------------- the owner's buckets in the workers


def test_workers_reach_their_owners_buckets_with_the_servers_lease(tmp_path, monkeypatch):
    """A cluster asked from a server carries that server's lease (the option ``storage_lease``, the workspace's
    default); each worker pod Dask Gateway's controller makes gets the posehub-storage sidecar with it and the
    owner's bucket plan. Run for real from the worker pod's spec against the hub's credential endpoint (the hub's
    own code, PodLease on a moto S3/STS server), that sidecar mounts the owner's buckets and writes the manifest
    posehub.storage reads. A malformed lease is refused; a cluster without one has workers without storage."""
    import shutil
    import threading

    import kubernetes_validate
    from dask_gateway_server.backends.kubernetes.controller import KubeController
    from dask_gateway_server.utils import FrozenAttrDict

    from hubfixture import free_port
    from posehub.hub import mounts
    from posehub.k8s import podstorage, podsync
    from posehub.k8s.leases import PodLease
    from s3server import MotoServer, lab_buckets

    if shutil.which("s3fs") is None:
        pytest.skip("s3fs is not installed (make test installs it)")
    s3 = MotoServer(tmp_path).start()
    try:
        port = free_port()
        buckets = lab_buckets(s3, tmp_path, port)
        admin = s3.client("s3")
        admin.put_object(Bucket="lab-homes", Key="bob/labels.csv", Body=b"x,y")
        admin.put_object(Bucket="lab-homes", Key="alice/private.csv", Body=b"no")
        # the gateway's environment (the rendered values): the sidecar's image, the hub's endpoint
        monkeypatch.setenv(podstorage.SIDECAR_IMAGE_ENV, f"{REG}/posehub-hub:{TAG}")
        monkeypatch.setenv(podstorage.CREDENTIALS_URL_ENV, f"http://hub.{NS}:{port}")
        bob = PoseHubUser("bob", groups=["staff"])

        async def main():
            async with gateway(tmp_path, monkeypatch, buckets=buckets) as (backend, kube):
                lease = await PodLease.issue(backend.posehub, "bob", ["staff"])  # what the hub did for bob's server
                lease.start_renewal()
                secret = lease.lease.secret
                assert lease.pieces()["env"][podstorage.LEASE_OPTION_ENV] == secret  # his workspace's default option
                name = await backend.start_cluster(bob, {"profile": "pose-cpu", podstorage.LEASE_OPTION: secret})
                obj = kube.created[-1]
                worker = KubeController(gateway_instance=INSTANCE).make_pod(
                    NS, obj["metadata"]["name"], FrozenAttrDict(obj["spec"]["config"]), is_worker=True)
                kubernetes_validate.validate(worker, helm.KUBERNETES_VERSION, strict=True)
                dask, side = worker["spec"]["containers"]
                assert side["name"] == podstorage.SIDECAR and side["securityContext"]["privileged"] is True
                assert not (dask.get("securityContext") or {}).get("privileged")
                assert worker["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
                env = {e["name"]: e.get("value") for e in dask["env"]}
                assert env["POSEHUB_STORAGE"] == podstorage.MANIFEST_PATH
                views = {m["mountPath"]: m.get("mountPropagation") for m in dask["volumeMounts"]}
                assert views["/home/jovyan/buckets"] == views["/home/jovyan/home-bucket"] == "HostToContainer"
                side_env = {e["name"]: e["value"] for e in side["env"]}
                assert side_env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] == f"?token={secret}"
                # the worker's sidecar, run from its spec (the hub's address as it is reached here)
                side_env[podstorage.ENDPOINT_ENV] = f"http://127.0.0.1:{port}"
                root, manifest = tmp_path / "worker-mnt", tmp_path / "worker-storage.json"
                root.mkdir()
                stop = threading.Event()
                runner = threading.Thread(target=podsync.run, kwargs=dict(environ=side_env, stop=stop, root=root,
                                                                          manifest_path=manifest), daemon=True)
                runner.start()
                try:
                    await until(manifest.exists, "the worker's manifest", timeout=60)
                    data = json.loads(manifest.read_text())
                    assert sorted(e["name"] for e in data["buckets"]) == ["home", "lab-openfield", "lab-staff"]
                    assert all(e["mounted"] and e["credentials"]["session_token"] for e in data["buckets"])
                    assert sorted(str(p.relative_to(root)) for p in mounts.mounts_under(root)) == [
                        "buckets/lab-openfield", "buckets/lab-staff", "home-bucket"]
                    assert sorted((root / "home-bucket").iterdir()) == [root / "home-bucket" / "labels.csv"]
                finally:
                    stop.set()
                    await asyncio.to_thread(runner.join, 60)
                    lease.end()
                assert mounts.mounts_under(root) == []
                assert name
                # alice: her own plan; nothing of bob's
                await backend.start_cluster(ALICE, {"profile": "pose-cpu", podstorage.LEASE_OPTION: "A" * 43})
                alice_side = kube.created[-1]["spec"]["config"]["worker_extra_pod_config"]["containers"][0]
                planned = json.loads({e["name"]: e["value"] for e in alice_side["env"]}[podstorage.BUCKETS_ENV])
                assert sorted(b["bucket"] for b in planned) == ["lab-homes", "lab-openfield"]
                assert [b["prefix"] for b in planned if b["kind"] == "home"] == ["alice/"]
                message = await refusal(backend, PoseHubUser("carol"), {"profile": "pose-cpu",
                                                                        podstorage.LEASE_OPTION: "x{evil}"})
                assert message == "storage_lease: not a storage lease (leave the option as your server sets it)"
                await backend.start_cluster(PoseHubUser("dave"), {"profile": "pose-cpu"})
                assert "containers" not in kube.created[-1]["spec"]["config"].get("worker_extra_pod_config", {})

        asyncio.run(main())
    finally:
        s3.stop()
