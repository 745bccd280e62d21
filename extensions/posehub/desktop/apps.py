"""``python -m posehub.desktop.apps sleap|napari [PATH]``: a GUI on the desktop (the menu entries and
:func:`posehub.desktop.open_project` run it).

OpenCV's Qt build (``opencv-python``, which DeepLabCut needs beside the headless one) points Qt at its own Qt 5
platform plugins when imported; SLEAP and napari run on PySide6 (Qt 6), which cannot load those. OpenCV is
imported first and its setting removed, so Qt finds PySide6's own plugins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

QT_VARS = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR")


def _qt_for_pyside() -> None:
    try:
        import cv2  # noqa: F401 - sets QT_QPA_PLATFORM_PLUGIN_PATH when it is opencv-python
    except ImportError:
        pass
    for var in QT_VARS:
        os.environ.pop(var, None)


def sleap(path: str | None) -> int:
    from sleap.gui.app import main

    sys.argv = ["sleap-label"] + ([path] if path else [])
    return main() or 0


def napari(path: str | None) -> int:
    import napari as nap

    viewer = nap.Viewer(title=f"napari: {Path(path).name}" if path else "napari")
    viewer.window.add_plugin_dock_widget("napari-deeplabcut", "Keypoint controls")
    if path:
        config = Path(path).parent.parent / "config.yaml"
        if Path(path).parent.name == "labeled-data" and config.exists():
            viewer.open(str(config), plugin="napari-deeplabcut")
        viewer.open(str(path), plugin="napari-deeplabcut")
    nap.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if a]  # the menu's %f is empty when nothing was chosen
    if not args or args[0] not in ("sleap", "napari") or len(args) > 2:
        print("usage: python -m posehub.desktop.apps sleap|napari [PATH]", file=sys.stderr)
        return 2
    if not os.environ.get("DISPLAY"):
        print("error: no DISPLAY: run this on the desktop (JupyterLab's Launcher: Desktop)", file=sys.stderr)
        return 2
    _qt_for_pyside()
    path = args[1] if len(args) > 1 else None
    return sleap(path) if args[0] == "sleap" else napari(path)


if __name__ == "__main__":
    raise SystemExit(main())
