"""Register RepLLaMA in Pyserini's encoder class maps and CLI choices (called by the import hook)."""
import argparse

NAMES = ("repllama",)
_done = False


def _patch_argparse() -> None:
    """Pyserini's CLIs hard-code ``--encoder-class`` choices; add ours to any such option that lists ``auto``."""
    original = argparse._ActionsContainer.add_argument
    if getattr(original, "_repllama", False):
        return

    def add_argument(self, *args, **kwargs):
        choices = kwargs.get("choices")
        if "--encoder-class" in args and choices is not None and "auto" in choices:
            kwargs["choices"] = list(choices) + [n for n in NAMES if n not in choices]
        return original(self, *args, **kwargs)

    add_argument._repllama = True
    argparse._ActionsContainer.add_argument = add_argument


def _put_first(class_map: dict, key: str, cls) -> None:
    """Pyserini matches encoder names by substring in map order; ours goes first so e.g. a path
    containing 'ance' still resolves a RepLLaMA checkpoint to RepLLaMA."""
    rest = [(k, v) for k, v in class_map.items() if k != key]
    class_map.clear()
    class_map[key] = cls
    class_map.update(rest)


def register() -> None:
    global _done
    if _done:
        return
    import pyserini.encode as pe
    from .encoder import RepLLaMADocumentEncoder, RepLLaMAQueryEncoder

    _put_first(pe.query_encoder_class_map, "repllama", RepLLaMAQueryEncoder)
    _put_first(pe.document_encoder_class_map, "repllama", RepLLaMADocumentEncoder)
    _patch_argparse()
    _done = True
