"""Tiny real wheels for the tests of what carries wheels to the GPU machine: pip installs them."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tools.gpu_bundle import slim


def make_wheel(folder: Path, name: str, files: dict[str, bytes], version: str = "1.0") -> Path:
    """A pure-Python wheel holding `files` (path in the wheel: contents), installable by pip."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: semore-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    slim(wheel, ())  # drops nothing: writes the RECORD of what is there
    return wheel
