"""Model presets: one small YAML per model (``encoders/*.yaml``, shipped as ``repllama_pyserini/presets/``; a trained
checkpoint directory carries its own ``preset.yaml``). A preset says how a checkpoint turns text into vectors
(``kind: encoder``, :class:`EncoderPreset`) or scores (``kind: reranker``, :class:`RerankerPreset`), so a model is
named once (``--encoder repllama``, ``--model rankllama``) and used the same everywhere. Its keys are the fields of
those classes; ``encoders/*.yaml`` are examples.

A name that is neither a preset, a preset file nor a local directory must be a hub id with its organisation
(``org/model``); an unknown bare name is an error that lists the presets and suggests the closest.
``python -m repllama_pyserini.presets`` lists them.
"""
from __future__ import annotations

import dataclasses
import difflib
import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .cli import InputError
from .templates import PAIR_FORMATS, POOLINGS, PairTemplate, Template

ENV = "REPLLAMA_PYSERINI_PRESETS"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(PACKAGE_DIR)
DIR_PRESET = "preset.yaml"  # a checkpoint directory's own preset (written by repllama_pyserini.train)


@dataclass
class Preset:
    model: str                        # full checkpoint or LoRA adapter (hub id or local dir)
    name: Optional[str] = None        # what users type (also any of ``aliases``)
    aliases: List[str] = field(default_factory=list)
    description: str = ""
    base_model: Optional[str] = None  # default: the adapter's adapter_config.json
    tokenizer: Optional[str] = None   # default: the model dir's, else the base's
    padding_side: str = "right"
    source: Optional[str] = None  # the YAML file it came from
    kind = "model"

    def where(self) -> str:
        return self.source or self.name or self.model

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise InputError(f"preset {self.where()}: padding_side must be 'left' or 'right'")

    def replace(self, **changes) -> "Preset":
        """A copy with the non-None ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return dict(kind=self.kind, **d)

    def _check_length(self, key: str, low: int) -> None:
        v = getattr(self, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise InputError(f"preset {self.where()}: {key} must be an integer >= {low}")


@dataclass
class EncoderPreset(Preset):
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    passage_fields: List[str] = field(default_factory=lambda: ["title", "text"])
    query_max_length: int = 32        # tokens, BOS and the appended EOS included
    passage_max_length: int = 156
    pooling: str = "eos"
    normalize: bool = True
    append_eos: bool = True
    dimension: Optional[int] = None
    kind = "encoder"

    def __post_init__(self):
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise InputError(f"preset {self.where()}: pooling {self.pooling!r} is not one of {list(POOLINGS)}")
        if self.pooling == "eos" and not self.append_eos:
            raise InputError(f"preset {self.where()}: pooling 'eos' needs append_eos: true")
        self._check_length("query_max_length", 2)
        self._check_length("passage_max_length", 2)
        self.passage_fields = [self.passage_fields] if isinstance(self.passage_fields, str) else list(self.passage_fields)
        if not self.passage_fields:
            raise InputError(f"preset {self.where()}: passage_fields is empty")

    def query_template(self) -> Template:
        return Template(self.query_prefix, self.query_max_length, append_eos=self.append_eos)

    def passage_template(self) -> Template:
        return Template(self.passage_prefix, self.passage_max_length, tuple(self.passage_fields), self.append_eos)


@dataclass
class RerankerPreset(Preset):
    query_prefix: str = "query: "
    document_prefix: str = "document: "
    document_fields: List[str] = field(default_factory=lambda: ["title", "text"])
    max_length: int = 512             # tokens of the whole (query, document) pair
    depth: int = 200                  # candidates reranked per query
    pair_format: str = "rankllama"    # or tevatron (templates.PAIR_FORMATS)
    append_eos: bool = False
    kind = "reranker"

    def __post_init__(self):
        super().__post_init__()
        self._check_length("max_length", 4)
        self._check_length("depth", 1)
        if self.pair_format not in PAIR_FORMATS:
            raise InputError(f"preset {self.where()}: pair_format must be one of {list(PAIR_FORMATS)}")
        self.document_fields = [self.document_fields] if isinstance(self.document_fields, str) \
            else list(self.document_fields)

    def pair_template(self) -> PairTemplate:
        return PairTemplate(self.pair_format, self.query_prefix, self.document_prefix, tuple(self.document_fields),
                            self.max_length, self.append_eos)


CLASSES = {"encoder": EncoderPreset, "reranker": RerankerPreset}
# model defaults for a checkpoint without a preset: RepLLaMA passage; RankLLaMA passage or document
GRANULARITIES = {"passage": {}, "document": dict(max_length=2048, depth=100, document_fields=["url", "title", "text"])}


def preset_dirs() -> List[str]:
    """``$REPLLAMA_PYSERINI_PRESETS`` (``:``-separated), the package's ``presets/``, the repository's ``encoders/``."""
    dirs = [d for d in os.environ.get(ENV, "").split(os.pathsep) if d]
    dirs += [os.path.join(PACKAGE_DIR, "presets"), os.path.join(REPO_ROOT, "encoders")]
    return [d for d in dirs if os.path.isdir(d)]


def load_preset_file(path: str, directory: Optional[str] = None) -> Preset:
    """A preset file; ``directory``: the checkpoint directory holding it (its ``model`` when the file names none)."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read preset {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"preset {path}: expected a mapping of keys to values")
    kind = data.pop("kind", None)
    if kind not in CLASSES:
        raise InputError(f"preset {path}: 'kind' must be one of {list(CLASSES)}, got {kind!r}")
    cls = CLASSES[kind]
    keys = {f.name for f in dataclasses.fields(cls)} - {"source"}
    unknown = sorted(set(data) - keys)
    if unknown:
        raise InputError(f"preset {path}: unknown key(s) {unknown} for a {kind}; known: {sorted(keys)}")
    if directory and not data.get("model"):
        data["model"] = directory
    if not data.get("model"):
        raise InputError(f"preset {path}: 'model' (checkpoint or adapter) is required")
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return cls(source=path, **data)


def list_presets() -> Dict[str, Preset]:
    """``{name: preset}`` over every preset directory (the first directory wins a name clash)."""
    out: Dict[str, Preset] = {}
    for d in preset_dirs():
        for path in sorted(glob.glob(os.path.join(d, "*.yaml")) + glob.glob(os.path.join(d, "*.yml"))):
            p = load_preset_file(path)
            out.setdefault(p.name, p)
    return out


def suggest(name: str, kind: Optional[str] = None) -> str:
    """``; did you mean 'x'?`` for the closest preset name or alias (empty when none is close)."""
    names = [n for p in list_presets().values() if kind in (None, p.kind) for n in [p.name, *p.aliases]]
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listing(kind: Optional[str]) -> str:
    return ", ".join(sorted(n for n, p in list_presets().items() if kind in (None, p.kind)))


def find_preset(name: str) -> Optional[Preset]:
    """The preset ``name`` means (a preset file, a checkpoint directory's own preset, a name or alias), or None."""
    if name.endswith((".yaml", ".yml")):
        if not os.path.isfile(name):
            raise InputError(f"preset file not found: {name}")
        return load_preset_file(name)
    if os.path.isdir(name):  # a local checkpoint is never shadowed by a preset of the same spelling
        own = os.path.join(name, DIR_PRESET)
        if not os.path.isfile(own):
            return None
        p = load_preset_file(own, directory=name)  # written next to the weights: follow the directory if it was moved
        moved = {"model": name, "tokenizer": name if p.tokenizer and p.tokenizer == p.model else None}
        return p.replace(**moved)
    key = name.strip().rstrip("/").lower()
    for p in list_presets().values():
        if key == (p.name or "").lower() or key in (a.lower() for a in p.aliases):
            return p
    return None


def resolve(name: Optional[str], kind: str, granularity: Optional[str] = None, **overrides) -> Tuple[Preset, bool]:
    """The settings for ``name`` as a ``kind`` model: its preset, else the defaults with ``model=name``; then the
    non-None ``overrides``. Returns ``(preset, found)``."""
    what = "encoder" if kind == "encoder" else "reranker model"
    if not name:
        raise InputError(f"no {what} given: pass a preset name ({_listing(kind)}), a hub id or a local directory")
    p = find_preset(name)
    if p is not None and p.kind != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise InputError(f"{name} is a {p.kind} preset, not {article} {kind}"
                         + (" (use repllama_pyserini.rerank for a reranker)" if p.kind == "reranker" else ""))
    found = p is not None
    if p is None:
        if "/" not in name.strip("/") and not os.path.isdir(name):
            raise InputError(f"unknown {kind} preset {name!r}{suggest(name, kind)} Presets: {_listing(kind)}. "
                             f"A Hugging Face model is named org/model; a local checkpoint by its directory")
        defaults = GRANULARITIES.get(granularity or "passage", {}) if kind == "reranker" else {}
        p = CLASSES[kind](model=name, name=name, **defaults)
    elif granularity and kind == "reranker":
        p = p.replace(**GRANULARITIES[granularity])
    return p.replace(**overrides), found


def write_preset(path: str, preset: dict, comment: str) -> None:
    import yaml
    from .formats.files import atomic_write
    with atomic_write(path) as f:
        f.write(f"# {comment}\n")
        yaml.safe_dump(preset, f, sort_keys=False, allow_unicode=True)


def main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m repllama_pyserini.presets", description="List the model presets.")
    ap.add_argument("--kind", choices=sorted(CLASSES))
    args = ap.parse_args(argv)
    for name, p in sorted(list_presets().items()):
        if args.kind in (None, p.kind):
            aliases = f" (also: {', '.join(p.aliases)})" if p.aliases else ""
            print(f"{p.kind:8s}  {name}{aliases}\n          {p.description}")


if __name__ == "__main__":
    from .cli import run_cli
    run_cli(main)
