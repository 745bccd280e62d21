"""ImageNet weights for DeepLabCut's backbone, carried by the pose image: nothing is downloaded when training.

DeepLabCut 3 builds its ResNet-50 with timm (``resnet50_gn``) and, left to
itself, fetches the ImageNet weights from the Hugging Face hub when training
starts; with no network that fails. PoseHub keeps the weights as one file in
the image's environment instead (``<env>/share/posehub/weights/``, or
``$POSEHUB_WEIGHTS_DIR``), fetched once when the image is built
(``images/pose/Dockerfile``) or by ``make weights`` on one machine. The DLC
trainer loads that file into the backbone (``weights: imagenet``) and records
its SHA-256.

    python -m posehub.pose.weights where           # where the file is looked for, and whether it is there
    python -m posehub.pose.weights fetch           # download it (HF_ENDPOINT names a mirror)
    python -m posehub.pose.weights install FILE    # keep a copy downloaded elsewhere (no network here)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .record import file_sha256


class WeightsError(RuntimeError):
    """Weights that are missing or are not what they claim; the message says what to do."""


@dataclass(frozen=True)
class Backbone:
    net_type: str  # DeepLabCut's name
    timm_name: str  # timm's model name with its pretrained tag
    hf_repo: str  # where timm publishes those weights
    hf_file: str = "model.safetensors"

    @property
    def architecture(self) -> str:
        return self.timm_name.split(".")[0]

    @property
    def file_name(self) -> str:
        return f"{self.timm_name}.safetensors"

    def url(self, endpoint: str) -> str:
        return f"{endpoint.rstrip('/')}/{self.hf_repo}/resolve/main/{self.hf_file}"


# the ImageNet weights DeepLabCut itself starts from for each network (its config/backbones/*.yaml)
BACKBONES = {
    "resnet_50": Backbone("resnet_50", "resnet50_gn.a1h_in1k", "timm/resnet50_gn.a1h_in1k"),
}


def backbone(net_type: str) -> Backbone:
    try:
        return BACKBONES[net_type]
    except KeyError:
        raise WeightsError(f"no ImageNet weights are known for net_type {net_type!r} "
                           f"(known: {', '.join(sorted(BACKBONES))}); use weights: \"scratch\"") from None


def weights_dir() -> Path:
    return Path(os.environ.get("POSEHUB_WEIGHTS_DIR") or Path(sys.prefix) / "share" / "posehub" / "weights")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def path(net_type: str) -> Path:
    return weights_dir() / backbone(net_type).file_name


def available(net_type: str) -> bool:
    return net_type in BACKBONES and path(net_type).is_file()


def locate(net_type: str) -> Path:
    """The weights file for ``net_type``, or a WeightsError that says how to get it."""
    b = backbone(net_type)
    p = path(net_type)
    if not p.is_file():
        raise WeightsError(
            f"DeepLabCut's ImageNet weights for {net_type} (timm's {b.timm_name}) are not in this environment "
            f"(looked for {p}). The pose image carries them when it is built from images/pose/Dockerfile; on one "
            f"machine run `make weights` where {endpoint()} can be reached, or download {b.url(endpoint())} "
            f"elsewhere and keep it with `python -m posehub.pose.weights install FILE`. Or train from random "
            f"weights with weights: \"scratch\".")
    return p


def sha256(p: Path) -> str:
    return file_sha256(str(p), open)


def load_into(model, p: Path, timm_name: str) -> None:
    """Load an ImageNet state dict (a .safetensors file) into a timm model whose classifier was removed.

    Every tensor of the model must come from the file (the file's ``fc.*`` classifier is dropped): a
    file of another architecture is refused with the names of what did not match."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{p} is not a readable .safetensors file ({e}); fetch it again: "
                           f"python -m posehub.pose.weights fetch --force") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def some(keys):
            return ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
        raise WeightsError(
            f"{p} does not hold {timm_name} weights: "
            + "; ".join(f"{len(k)} {what} ({some(k)})" for what, k in
                        (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if k))
    model.load_state_dict(state, strict=True)


def fetch(net_type: str = "resnet_50", force: bool = False, say: Callable[[str], None] = print,
          opener=urllib.request.urlopen) -> Path:
    """Download the weights for ``net_type`` into :func:`weights_dir`, with progress; checked with timm
    before they are kept, so a half or wrong download never replaces a good file."""
    b = backbone(net_type)
    dest = path(net_type)
    if dest.is_file() and not force:
        say(f"{b.timm_name}: already there ({dest})")
        return dest
    url = b.url(endpoint())
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    say(f"downloading {b.timm_name} from {url}")
    try:
        with opener(url, timeout=30) as r, open(part, "wb") as out:
            total = int(r.headers.get("Content-Length") or 0)
            done, shown = 0, -1
            for chunk in iter(lambda: r.read(2**20), b""):
                out.write(chunk)
                done += len(chunk)
                pct = int(100 * done / total) if total else -1
                if total and pct // 10 != shown:
                    shown = pct // 10
                    say(f"  {done / 2**20:.0f} / {total / 2**20:.0f} MiB ({pct} %)")
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise WeightsError(f"cannot download {url}: {getattr(e, 'reason', e)}. DeepLabCut can still train "
                           f"from random weights (weights: \"scratch\"); to use ImageNet weights, run this where "
                           f"the Hugging Face hub (or the mirror named by HF_ENDPOINT) can be reached.") from None
    return _keep(part, dest, b, url, say)


def install(src: str | os.PathLike, net_type: str = "resnet_50", say: Callable[[str], None] = print) -> Path:
    """Keep a weights file obtained elsewhere (where this machine cannot reach the hub), checked as
    :func:`fetch` checks a download."""
    b = backbone(net_type)
    src = Path(src)
    if not src.is_file():
        raise WeightsError(f"{src}: no such file (download {b.url(endpoint())} and give its path)")
    dest = path(net_type)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, part)
    return _keep(part, dest, b, str(src), say)


def _keep(part: Path, dest: Path, b: Backbone, origin: str, say) -> Path:
    """Check ``part`` against timm's model, then put it in place; on a bad file nothing is kept."""
    try:
        import timm

        load_into(_headless(timm.create_model(b.architecture, pretrained=False)), part, b.timm_name)
    except WeightsError as e:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{origin} did not give {b.timm_name} weights, nothing was kept: {e}") from None
    part.replace(dest)
    say(f"{b.timm_name}: {dest} (sha256 {sha256(dest)[:12]})")
    return dest


def _headless(model):
    import torch.nn as nn

    model.fc = nn.Identity()  # as DeepLabCut's ResNet backbone does
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m posehub.pose.weights", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["where", "fetch", "install"])
    ap.add_argument("file", nargs="?", help="install: the weights file (.safetensors) to keep")
    ap.add_argument("--net", default="resnet_50", help="DeepLabCut net_type (default resnet_50)")
    ap.add_argument("--force", action="store_true", help="download again even when the file is there")
    args = ap.parse_args(argv)
    try:
        if args.action == "where":
            p = path(args.net)
            print(f"{p} ({'present' if p.is_file() else 'missing'})")
            return 0 if p.is_file() else 1
        if args.action == "install":
            if not args.file:
                ap.error("install needs the weights file: python -m posehub.pose.weights install FILE")
            install(args.file, args.net)
        else:
            fetch(args.net, force=args.force)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
