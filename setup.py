"""Build hook: ship the repository's default trace inside the wheel.

``traces/default.jsonl`` stays where it is in the repository (baselines and docs name
that path); ``build_py`` copies it to ``sim/data/default.jsonl`` in the build tree, so a
wheel (and an sdist-built wheel, see MANIFEST.in) carries it as package data.  A plain
copy at build time works on a fresh clone on every OS (no symlink, no committed
duplicate).  ``sim.common.paths.DEFAULT_TRACE`` finds it in a checkout or a wheel.
Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TRACE = Path("traces") / "default.jsonl"


class BuildPyWithTrace(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads traces/default.jsonl from the checkout
        target = Path(self.build_lib) / "sim" / "data" / TRACE.name
        self.mkpath(str(target.parent))
        self.copy_file(str(TRACE), str(target))


setup(cmdclass={"build_py": BuildPyWithTrace})
