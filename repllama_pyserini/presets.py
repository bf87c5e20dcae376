"""Encoder presets: one small YAML file per released model (``encoders/*.yaml`` at the top of the repository,
shipped as ``repllama_pyserini/presets/*.yaml`` in a wheel).

A preset says how a decoder checkpoint is turned into a dense retriever: which base model and LoRA adapter,
which tokenizer, the input templates (prefix + fields), max lengths, pooling, normalisation and the embedding
dimension. A preset is used wherever a model is named: ``--encoder castorini/repllama-v1-7b-lora-passage``
(its ``name`` or one of its ``aliases``), or ``--encoder path/to/my-preset.yaml``. A local checkpoint directory
holding a ``repllama_preset.yaml`` (as :mod:`repllama_pyserini.train` writes) uses it, with the model (and a
tokenizer that was the model's) taken from that directory. Any other name (a hub id, a local directory) gets
:data:`DEFAULTS`, the RepLLaMA recipe. Supporting another decoder (Mistral, Qwen,
SmolLM...) is a new YAML file, not new code.

Keys (all optional except ``model``)::

    name: castorini/repllama-v1-7b-lora-passage   # what users type; defaults to the file name
    aliases: [repllama-v1-7b-lora-passage]
    model: castorini/repllama-v1-7b-lora-passage  # full checkpoint or LoRA adapter (hub id or local dir)
    base_model: meta-llama/Llama-2-7b-hf           # base of the adapter (default: the adapter's own config)
    tokenizer: meta-llama/Llama-2-7b-hf            # default: the model dir if it has one, else the base
    query_prefix: "query: "
    passage_prefix: "passage: "
    passage_fields: [title, text]                  # joined with single spaces; empty fields are left out
    query_max_length: 32                           # tokens, BOS and the appended EOS included
    passage_max_length: 156
    pooling: eos                                   # hidden state of the last (appended EOS) token
    normalize: true                                # L2
    append_eos: true                               # EOS id appended after truncation (so it survives it)
    dimension: 4096                                # checked against the model's hidden size
    padding_side: right                            # left and right give the same embeddings
    kind: encoder                                  # or reranker (RankLLaMA: pooling last, one logit)
    depth: 200                                     # rerankers: candidates reranked per query

A reranker preset (``kind: reranker``) uses the same keys: ``passage_prefix`` is the document prefix and
``passage_max_length`` the max length of the whole query-document pair. A preset without ``kind`` is a reranker
when its name, file name or an alias contains ``rankllama``, else an encoder.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .io import InputError

ENV = "REPLLAMA_PYSERINI_PRESETS"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(PACKAGE_DIR)
POOLINGS = ("eos", "last", "mean")
KINDS = ("encoder", "reranker")
DIR_PRESET = "repllama_preset.yaml"  # a checkpoint directory's own preset


@dataclass
class Preset:
    model: str
    name: Optional[str] = None
    aliases: List[str] = field(default_factory=list)
    description: str = ""
    base_model: Optional[str] = None
    tokenizer: Optional[str] = None
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    passage_fields: List[str] = field(default_factory=lambda: ["title", "text"])
    query_max_length: int = 32
    passage_max_length: int = 156
    pooling: str = "eos"
    normalize: bool = True
    append_eos: bool = True
    dimension: Optional[int] = None
    padding_side: str = "right"
    kind: Optional[str] = None  # "encoder" or "reranker"; None: inferred from the names (see the module doc)
    depth: Optional[int] = None  # rerankers: default rerank depth
    source: Optional[str] = None  # the YAML file it came from

    def __post_init__(self):
        where = self.source or self.name or self.model
        if self.pooling not in POOLINGS:
            raise InputError(f"preset {where}: pooling {self.pooling!r} is not one of {list(POOLINGS)}")
        if self.padding_side not in ("left", "right"):
            raise InputError(f"preset {where}: padding_side must be 'left' or 'right'")
        for key in ("query_max_length", "passage_max_length"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 2:
                raise InputError(f"preset {where}: {key} must be an integer >= 2 (BOS/EOS take room)")
        if self.kind is None:
            names = [self.name or "", os.path.basename(self.source or "")] + list(self.aliases)
            self.kind = "reranker" if any("rankllama" in n.lower() for n in names) else "encoder"
        if self.kind not in KINDS:
            raise InputError(f"preset {where}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.depth is not None and (not isinstance(self.depth, int) or self.depth < 1):
            raise InputError(f"preset {where}: depth must be a positive integer")
        if isinstance(self.passage_fields, str):
            self.passage_fields = [self.passage_fields]
        if not self.passage_fields:
            raise InputError(f"preset {where}: passage_fields is empty")

    def replace(self, **changes) -> "Preset":
        """A copy with the non-None ``changes`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


DEFAULTS = Preset(model="")
_KEYS = {f.name for f in dataclasses.fields(Preset)} - {"source"}


def preset_dirs() -> List[str]:
    """Where presets are looked up, first match wins: ``$REPLLAMA_PYSERINI_PRESETS`` (``:``-separated),
    the installed package's ``presets/`` and the repository's ``encoders/``."""
    dirs = [d for d in os.environ.get(ENV, "").split(os.pathsep) if d]
    dirs += [os.path.join(PACKAGE_DIR, "presets"), os.path.join(REPO_ROOT, "encoders")]
    return [d for d in dirs if os.path.isdir(d)]


def load_preset_file(path: str) -> Preset:
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"cannot read preset {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"preset {path}: expected a mapping of keys to values")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise InputError(f"preset {path}: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    if not data.get("model"):
        raise InputError(f"preset {path}: 'model' (checkpoint or adapter) is required")
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    try:
        return Preset(source=path, **data)
    except TypeError as e:
        raise InputError(f"preset {path}: {e}") from None


def list_presets() -> Dict[str, Preset]:
    """``{name: preset}`` over all preset directories (first directory wins on a name clash)."""
    out: Dict[str, Preset] = {}
    for d in preset_dirs():
        for path in sorted(glob.glob(os.path.join(d, "*.yaml")) + glob.glob(os.path.join(d, "*.yml"))):
            p = load_preset_file(path)
            out.setdefault(p.name, p)
    return out


def find_preset(name: Optional[str]) -> Optional[Preset]:
    """The preset a user means by ``name`` (a preset file path, a preset name or alias), or None."""
    if not name:
        return None
    if name.endswith((".yaml", ".yml")):
        if not os.path.isfile(name):
            raise InputError(f"preset file not found: {name}")
        return load_preset_file(name)
    if os.path.isdir(name):  # a local checkpoint is never shadowed by a preset of the same spelling
        own = os.path.join(name, DIR_PRESET)
        if not os.path.isfile(own):
            return None
        p = load_preset_file(own)  # written next to the weights (by repllama_pyserini.train): follow the dir
        moved = {"model": name}
        if p.tokenizer and p.tokenizer == p.model:
            moved["tokenizer"] = name
        return p.replace(**moved)
    key = name.strip().rstrip("/").lower()
    for p in list_presets().values():
        if key == (p.name or "").lower() or key in (a.lower() for a in p.aliases):
            return p
    return None


def resolve(name: str, **overrides) -> Tuple[Preset, bool]:
    """The settings for ``name``: its preset with ``overrides`` (None values ignored) applied, or the RepLLaMA
    defaults with ``model=name``. Returns ``(preset, found)``."""
    if not name:
        raise InputError("no encoder given: pass a model name, a local checkpoint directory or a preset")
    p = find_preset(name)
    found = p is not None
    if p is None:
        p = dataclasses.replace(DEFAULTS, model=name, name=name)
    return p.replace(**overrides), found
