"""JupyterHub config of PoseHub: load posehub.yaml -> validate -> apply.

Everything a lab changes lives in posehub.yaml (or the file named by
$POSEHUB_CONFIG); this file only wires it in.
"""

import sys

from posehub.config import ConfigError, load
from posehub.hub.hubapply import apply_all

try:
    posehub_config = load()
except ConfigError as err:
    print(f"PoseHub cannot start: {err}", file=sys.stderr)
    sys.exit(2)

apply_all(c, posehub_config)  # noqa: F821 (c is given by JupyterHub)
