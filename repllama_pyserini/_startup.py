"""Import hooks installed at interpreter start-up by ``repllama_pyserini.pth`` (and by importing the package).

* before ``jnius`` is imported (Pyserini starts its JVM then): pick a Java >= 21 (:mod:`repllama_pyserini.java`);
* after ``pyserini.encode`` is imported: register RepLLaMA with Pyserini (:func:`repllama_pyserini.plugin.register`);
* after Pyserini's Faiss searcher is imported: check indexes against RepLLaMA query encoders
  (:func:`repllama_pyserini.plugin.patch_faiss_searcher`).

Kept tiny: it runs in every Python process of the environment and imports nothing heavy.
"""
import importlib.abc
import importlib.machinery
import sys

_AFTER = {"pyserini.encode": ("repllama_pyserini.plugin", "register"),
          "pyserini.search.faiss._searcher": ("repllama_pyserini.plugin", "patch_faiss_searcher")}


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, after):
        self._loader, self._after = loader, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        mod, fn = self._after
        try:
            getattr(importlib.import_module(mod), fn)()
        except Exception as e:  # a plugin must never break its host
            import warnings
            warnings.warn(f"repllama-pyserini: could not register with {module.__name__}: {e!r}")

    def __getattr__(self, name):  # get_code, get_source, is_package... for runpy and friends
        return getattr(self._loader, name)


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "jnius":
            from . import java, plugin
            plugin.install_excepthook()  # our errors inside Pyserini's CLIs: one line, no traceback
            java.configure()
            return None
        if name in _AFTER:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, _AFTER[name])
            return spec
        return None


if not any(isinstance(f, _Hook) for f in sys.meta_path):
    sys.meta_path.insert(0, _Hook())
