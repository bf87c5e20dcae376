"""The Pyserini plugin, run by the start-up hook (:mod:`._startup`) in every process of the environment.

1. Registration, Pyserini's own extension point: a ``repllama`` entry in ``pyserini.encode``'s query and document
   encoder class maps (so ``--encoder repllama`` or a path containing ``repllama``, and none of Pyserini's own
   keywords, resolves to it, as ``encode/_qwen3.py`` does for Qwen3). The entries are factories that import the
   encoder classes when called: no import cycle.
2. Patch (Pyserini's CLIs hard-code the ``--encoder-class`` choices): argparse's ``add_argument`` is wrapped so that
   an ``--encoder-class`` option whose choices include Pyserini's ``auto`` also accepts ``repllama``. Nothing else
   changes.
3. Patch (``FaissSearcher`` has no hook for it): after ``FaissSearcher.__init__`` with a RepLLaMA query encoder, the
   index is checked against the encoder: another dimension is an error; an index whose ``repllama-index.json``
   records other weights or settings is an error unless ``REPLLAMA_PYSERINI_ALLOW_ENCODER_MISMATCH=1``.
4. Patch (``FaissSearcher.load_index`` reads one ``index`` whole): ``--index`` naming the shards of ``encode
   --no-merge`` (a work dir or one shard dir) or a directory of index dirs, or a Flat index dir when
   ``REPLLAMA_PYSERINI_MMAP=1``, is searched in place, memory-mapped window by window (:mod:`.dense.search`).
5. Patch (Pyserini's CLIs show tracebacks): ``sys.excepthook`` prints this toolkit's own errors (``InputError``,
   ``JavaNotFoundError``) raised inside them as one line; any other exception keeps its traceback.
"""
from __future__ import annotations

import argparse
import os

NAME = "repllama"
ALLOW_MISMATCH = "REPLLAMA_PYSERINI_ALLOW_ENCODER_MISMATCH"


def _query_encoder(**kwargs):
    from .dense.pyserini_encoders import RepLLaMAQueryEncoder
    return RepLLaMAQueryEncoder(**kwargs)


def _document_encoder(**kwargs):
    from .dense.pyserini_encoders import RepLLaMADocumentEncoder
    return RepLLaMADocumentEncoder(**kwargs)


def register() -> None:
    """Add RepLLaMA to Pyserini's encoder class maps and accept it as an ``--encoder-class`` choice."""
    import pyserini.encode as pe
    pe.query_encoder_class_map[NAME] = _query_encoder
    pe.document_encoder_class_map[NAME] = _document_encoder
    original = argparse._ActionsContainer.add_argument
    if getattr(original, "_repllama", False):
        return

    def add_argument(self, *args, **kwargs):
        choices = kwargs.get("choices")
        if "--encoder-class" in args and choices is not None and "auto" in choices and NAME not in choices:
            kwargs["choices"] = list(choices) + [NAME]
        return original(self, *args, **kwargs)

    add_argument._repllama = True
    argparse._ActionsContainer.add_argument = add_argument


def _is_our_checkpoint(path) -> bool:
    from .presets import DIR_PRESET
    return isinstance(path, str) and os.path.isfile(os.path.join(path, DIR_PRESET))


def check_index(index_dir: str, dimension: int, query_encoder) -> None:
    """Refuse a query encoder that does not match the index (see the module doc); a RepLLaMA index or checkpoint
    searched with another of Pyserini's encoder classes (``--encoder DIR`` whose name has no ``repllama`` in it
    gets Pyserini's ``AutoQueryEncoder``) is refused too: its scores would be meaningless."""
    from .cli import InputError
    from .dense.pyserini_encoders import RepLLaMAQueryEncoder
    if not isinstance(query_encoder, RepLLaMAQueryEncoder):
        if getattr(query_encoder, "model", None) is None:  # pre-encoded queries (--encoded-queries): not ours to judge
            return
        from .dense.search import metadata
        encoder_dir = getattr(query_encoder, "encoder_dir", None) or \
            getattr(getattr(getattr(query_encoder, "model", None), "config", None), "_name_or_path", None)
        why = "it was built by a RepLLaMA encoder" if metadata(index_dir) is not None else \
            f"{encoder_dir} is a repllama-pyserini checkpoint" if _is_our_checkpoint(encoder_dir) else None
        if why:
            raise InputError(f"{index_dir} is searched with Pyserini's {type(query_encoder).__name__}, but {why}: "
                             f"add --encoder-class {NAME}")
        return
    if query_encoder.encoder is None:
        return
    enc = query_encoder.encoder
    if enc.dimension and int(dimension) != enc.dimension:
        raise InputError(f"dimension mismatch: {index_dir} holds {dimension}-d vectors but the query encoder "
                         f"{enc.preset.name} produces {enc.dimension}-d ones (was the index built with another model?)")
    from .dense.index import encoder_key
    from .dense.search import metadata
    meta = metadata(index_dir)
    if meta is None or os.environ.get(ALLOW_MISMATCH) == "1":
        return
    built, now = encoder_key(meta["encoder"]), encoder_key(enc.identity())
    changes = [f"its {k} weights differ" if k in ("model", "base") else f"{k}: {built.get(k)} -> {now.get(k)}"
               for k in now if built.get(k) != now[k] and not (k == "base" and None in (built.get(k), now[k]))]
    if changes:
        raise InputError(f"{index_dir} was built with another encoder than {enc.preset.name} ({'; '.join(changes)}); "
                         f"search with the encoder that built it, or set {ALLOW_MISMATCH}=1 to proceed on purpose")


def patch_faiss_searcher() -> None:
    from pyserini.search.faiss import _searcher
    cls = _searcher.FaissSearcher
    if getattr(cls.__init__, "_repllama", False):
        return
    original = cls.__init__

    def __init__(self, index_dir, query_encoder, *args, **kwargs):
        original(self, index_dir, query_encoder, *args, **kwargs)
        if isinstance(index_dir, str) and os.path.isdir(index_dir):
            check_index(index_dir, self.dimension, query_encoder)

    __init__._repllama = True
    cls.__init__ = __init__
    load = cls.load_index

    def load_index(self, index_dir):
        from .dense.search import open_index, wanted
        if not wanted(index_dir):
            return load(self, index_dir)
        if self.faiss_device != "cpu":
            from .cli import InputError
            raise InputError(f"{index_dir} is searched in place, on the CPU: drop --faiss-device {self.faiss_device}")
        return open_index(index_dir)

    cls.load_index = load_index


def install_excepthook() -> None:
    """Patch 5 (see the module doc); installed before Pyserini starts its JVM."""
    import sys
    if getattr(sys.excepthook, "_repllama", False):
        return
    from .cli import InputError
    from .java import JavaNotFoundError
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if isinstance(exc, (InputError, JavaNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    hook._repllama = True
    sys.excepthook = hook
