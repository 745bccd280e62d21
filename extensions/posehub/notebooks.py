"""Run a notebook with parameters, papermill style, with nbclient.

The notebook's cell tagged ``parameters`` holds its defaults (the small
settings that run in minutes on a CPU); the values given here go into a new
cell right after it, tagged ``injected-parameters``, exactly as papermill
does, so the executed notebook shows what it ran with. ::

    python -m posehub.notebooks notebooks/02_sleap.ipynb out.ipynb -p epochs=200 -p input_scale=1.0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class NotebookError(Exception):
    pass


def parameter_cell(params: dict):
    import nbformat

    src = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def inject(nb, params: dict):
    """Insert the parameters after the ``parameters`` cell; unknown names are refused."""
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if params and idx is None:
        raise NotebookError("this notebook has no cell tagged 'parameters'")
    if params:
        known = {line.split("=", 1)[0].strip() for line in nb.cells[idx].source.splitlines()
                 if "=" in line and not line.lstrip().startswith("#")}
        unknown = sorted(set(params) - known)
        if unknown:
            raise NotebookError(f"unknown parameter(s) {', '.join(unknown)}; this notebook takes: "
                                f"{', '.join(sorted(known))}")
        nb.cells.insert(idx + 1, parameter_cell(params))
    return nb


def run(path: str | Path, out: str | Path | None = None, params: dict | None = None, timeout: int = 1800,
        cwd: str | Path | None = None):
    """Execute ``path`` with ``params``; save it (with outputs) to ``out``. Raises nbclient's
    CellExecutionError (the failing cell and traceback) when a cell fails: the partly run notebook is
    still saved to ``out``."""
    import nbformat
    from nbclient import NotebookClient

    nb = inject(nbformat.read(str(path), as_version=4), dict(params or {}))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        nb.metadata["posehub"] = {"seconds": round(time.perf_counter() - t0, 1), "parameters": params or {}}
        if out:
            nbformat.write(nb, str(out))
    return nb


def outputs_text(nb) -> str:
    """Every text output of a notebook (streams, text/plain, text/html), for checks. Takes an nbformat
    notebook or the plain JSON of one."""

    def text(v):
        return v if isinstance(v, str) else "".join(v)

    parts = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append(text(o.get("text", "")))
            data = o.get("data", {})
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in data:
                    parts.append(text(data[mime]))
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m posehub.notebooks", description=__doc__.splitlines()[0])
    ap.add_argument("notebook")
    ap.add_argument("out")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a parameter (VALUE as JSON, else as a string)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args(argv)
    params = {}
    for p in args.param:
        name, sep, value = p.partition("=")
        if not sep:
            ap.error(f"parameter {p!r} is not NAME=VALUE")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    try:
        run(args.notebook, args.out, params, timeout=args.timeout)
    except NotebookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ran {args.notebook} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
