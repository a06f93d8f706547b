"""Write infra/docker/constraints.txt: the versions of raydiant's direct dependencies installed in
this environment (the ones `make test` passed with), for the image to install with. Local
version tags (+cpu) are dropped: the same pin installs the CUDA build on a GPU image."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
dependencies = tomllib.loads((HERE.parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
names = [re.split(r"[<>=\[ ;~!]", spec, maxsplit=1)[0] for spec in dependencies]
pins = [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in names]
(HERE / "constraints.txt").write_text(
    "# The versions raydiant was tested with, for its direct dependencies (make constraints).\n"
    + "\n".join(pins) + "\n")
