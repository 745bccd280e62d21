"""The README stays true: generated reference current, screenshots present."""

from pathlib import Path

from posehub.docs import BEGIN, END, config_reference

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_in_readme_is_current():
    readme = (REPO / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == config_reference().strip(), "run `make docs` to regenerate the config reference"


def test_every_schema_key_is_documented():
    for line in config_reference().splitlines():
        if line.startswith("| `"):
            assert not line.rstrip().endswith("|  |"), f"no description: {line}"


def test_readme_shows_the_two_commands_and_screenshot():
    readme = (REPO / "README.md").read_text()
    assert "make up" in readme and "make test" in readme
    assert "docs/spawn-page.png" in readme and (REPO / "docs" / "spawn-page.png").exists()
