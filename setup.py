"""Thin setup.py: metadata lives in setup.cfg.

The one thing done here is shipping ``repllama_pyserini.pth`` into site-packages (for ``pip install .`` and
``pip install -e .`` alike), so that every Python process of the environment -- e.g.
``python -m pyserini.search.faiss`` -- finds a Java >= 21 and sees the RepLLaMA encoders registered in
Pyserini's class maps, without editing Pyserini's files.
"""
import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "repllama_pyserini.pth"
PTH_SRC = os.path.join(HERE, PTH)


def _presets():
    return sorted(f for f in glob.glob(os.path.join(HERE, "encoders", "*.yaml")))


class BuildPyWithPth(build_py):
    """Regular wheels: the .pth sits at the root of the wheel (i.e. in site-packages) and the model presets of
    ``encoders/`` are shipped as ``repllama_pyserini/presets/`` (an editable install reads ``encoders/``)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copy(PTH_SRC, os.path.join(self.build_lib, PTH))
            target = os.path.join(self.build_lib, "repllama_pyserini", "presets")
            os.makedirs(target, exist_ok=True)
            for f in _presets():
                shutil.copy(f, target)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        presets = [os.path.join(self.build_lib, "repllama_pyserini", "presets", os.path.basename(f)) for f in _presets()]
        return outputs + [os.path.join(self.build_lib, PTH)] + presets


class EditableWheelWithPth(editable_wheel):
    """Editable wheels: everything in the unpacked wheel dir is packed, so put the .pth there too."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copy(PTH_SRC, os.path.join(installation_dir, PTH))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
