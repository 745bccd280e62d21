"""Replace the configuration reference in README.md with the one generated from the schema."""

import sys
from pathlib import Path

from posehub.docs import BEGIN, END, config_reference

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
if BEGIN not in text or END not in text:
    sys.exit(f"{readme}: markers for the config reference not found")
head, rest = text.split(BEGIN, 1)
_, tail = rest.split(END, 1)
readme.write_text(head + config_reference().rstrip("\n") + tail)
print(f"updated {readme}")
