"""Trainers: one small interface, one plugin per tool.

SLEAP (``sleap``) and DeepLabCut (``dlc``) come with PoseHub. A lab adds its own
by subclassing :class:`~posehub.pose.trainers.base.Trainer` and either calling
:func:`register` or declaring an entry point in its package::

    [project.entry-points."posehub.trainers"]
    mytool = "mylab.pose:MyTrainer"
"""

from __future__ import annotations

from importlib import import_module, metadata

from .base import Model, Prediction, Trainer, TrainerError

BUILTIN = {
    "sleap": "posehub.pose.trainers.sleap:SleapTrainer",
    "dlc": "posehub.pose.trainers.dlc:DLCTrainer",
}
ALIASES = {"deeplabcut": "dlc", "sleap-nn": "sleap"}
_registered: dict[str, type[Trainer]] = {}


def register(name: str, cls: type[Trainer]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise TypeError(f"{cls!r} is not a posehub Trainer subclass")
    _registered[name] = cls


def available() -> list[str]:
    names = set(BUILTIN) | set(_registered)
    names |= {ep.name for ep in metadata.entry_points(group="posehub.trainers")}
    return sorted(names)


def get(name: str) -> type[Trainer]:
    """The trainer class for a framework name ("sleap", "dlc"/"deeplabcut", or a plugin's)."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key in _registered:
        return _registered[key]
    target = BUILTIN.get(key)
    if target is None:
        eps = [ep for ep in metadata.entry_points(group="posehub.trainers") if ep.name == key]
        if not eps:
            raise TrainerError(f"unknown framework {name!r}; available: {', '.join(available())}")
        return eps[0].load()
    mod, _, attr = target.partition(":")
    return getattr(import_module(mod), attr)


__all__ = ["Model", "Prediction", "Trainer", "TrainerError", "available", "get", "register"]
