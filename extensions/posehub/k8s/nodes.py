"""What a node of an EC2 instance type can give a pod on EKS (pure: a table and Amazon's formulas, no I/O).

A profile with ``aws_instance_type`` runs on that node type on Kubernetes (it is billed at that type's price).
Its pod is *limited* to the profile's CPU and memory, and *guaranteed* (requested) as much of them as such a
node has left for pods: the kubelet keeps some for itself (EKS's reserve, below) and every node runs a few
daemons (:data:`DAEMONS`). Without this a profile as large as its instance type (8 CPU on an 8-vCPU node)
would never be scheduled.

EKS's reserve (the AL2023 node bootstrap): memory ``255 MiB + 11 MiB x max pods`` plus the 100 MiB
eviction threshold; CPU 6 % of the first core, 1 % of the second, 0.5 % of the third and fourth, 0.25 % of the
rest. Max pods per instance type is the VPC CNI's (ENIs x (IPs per ENI - 1) + 2).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class InstanceType:
    vcpus: int
    memory_gib: int
    max_pods: int
    gpus: int = 0


# the instance types of the embedded config and Terraform's defaults, and their usual neighbours
INSTANCE_TYPES = {
    "t3.medium": InstanceType(2, 4, 17), "t3.large": InstanceType(2, 8, 35), "t3.xlarge": InstanceType(4, 16, 58),
    "m5.large": InstanceType(2, 8, 29), "m5.xlarge": InstanceType(4, 16, 58), "m5.2xlarge": InstanceType(8, 32, 58),
    "m5.4xlarge": InstanceType(16, 64, 234), "c5.xlarge": InstanceType(4, 8, 58), "c5.2xlarge": InstanceType(8, 16, 58),
    "r5.xlarge": InstanceType(4, 32, 58), "r5.2xlarge": InstanceType(8, 64, 58),
    "g4dn.xlarge": InstanceType(4, 16, 29, 1), "g4dn.2xlarge": InstanceType(8, 32, 29, 1),
    "g4dn.4xlarge": InstanceType(16, 64, 29, 1), "g5.xlarge": InstanceType(4, 16, 58, 1),
    "g5.2xlarge": InstanceType(8, 32, 58, 1), "g5.4xlarge": InstanceType(16, 64, 234, 1),
    "g6.xlarge": InstanceType(4, 16, 58, 1), "g6.2xlarge": InstanceType(8, 32, 58, 1),
    "g6.4xlarge": InstanceType(16, 64, 234, 1),
}
DAEMONS = (0.25, 512 * MIB)  # CPU and memory requested on every node by its daemons (CNI, kube-proxy, CSI, GPU plugin)


def reserved_cpu(vcpus: int) -> float:
    steps = [(1, 0.06), (1, 0.01), (2, 0.005)]
    left, total = vcpus, 0.0
    for cores, share in steps:
        used = min(left, cores)
        total += used * share
        left -= used
    return total + max(left, 0) * 0.0025


def allocatable(t: InstanceType) -> tuple[float, int]:
    """(CPU, memory bytes) a node of type ``t`` has for pods, its daemons' requests taken off."""
    cpu = t.vcpus - reserved_cpu(t.vcpus) - DAEMONS[0]
    memory = t.memory_gib * GIB - (255 + 11 * t.max_pods + 100) * MIB - DAEMONS[1]
    return cpu, memory


class DoesNotFit(ValueError):
    """A profile larger than its instance type; ``str()`` says which and what to do."""


def requests_for(profile: dict, memory_bytes: int) -> tuple[float, int] | None:
    """(CPU, memory bytes) to request for ``profile`` on its ``aws_instance_type`` node: the profile's, or what
    such a node can give when that is less; None for a type not in :data:`INSTANCE_TYPES` (requests = limits).
    :class:`DoesNotFit` when the profile asks for more CPUs, memory or GPUs than the instance type has."""
    name = profile.get("aws_instance_type") or ""
    t = INSTANCE_TYPES.get(name)
    if t is None:
        return None
    cpu, gpus = float(profile["cpu"]), int(profile.get("gpus") or 0)
    if cpu > t.vcpus or memory_bytes > t.memory_gib * GIB or gpus > t.gpus:
        raise DoesNotFit(f"profiles[{profile['slug']}]: {cpu:g} CPU, {profile['memory']} and {gpus} GPU(s) do not fit "
                         f"a {name} ({t.vcpus} vCPU, {t.memory_gib} GiB, {t.gpus} GPU(s)): make the profile smaller "
                         "or pick a larger aws_instance_type")
    alloc_cpu, alloc_memory = allocatable(t)
    return round(min(cpu, alloc_cpu), 2), int(min(memory_bytes, alloc_memory))
