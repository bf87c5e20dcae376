"""Expected scores published in Pyserini's 2CR YAMLs (``pyserini/2cr/{beir,msmarco-v1-passage,msmarco-v1-doc}.yaml``)."""
from __future__ import annotations

import os
from typing import Dict, Optional

import yaml

from .data import data_dir
from .io import InputError


def twocr_yaml(name: str = "beir", data: Optional[str] = None) -> dict:
    path = os.path.join(data_dir(data), "pyserini-2cr", f"{name}.yaml")
    if not os.path.isfile(path):
        raise InputError(f"Pyserini 2CR file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def beir_scores(condition: str, dataset: str, data: Optional[str] = None) -> Dict[str, float]:
    """E.g. ``beir_scores('bm25-flat', 'scifact') -> {'nDCG@10': 0.6789, 'R@100': 0.9253, 'R@1000': 0.9767}``."""
    for cond in twocr_yaml("beir", data)["conditions"]:
        if cond["name"] == condition:
            for ds in cond["datasets"]:
                if ds["dataset"] == dataset:
                    return {k: float(v) for k, v in ds["scores"][0].items()}
    raise InputError(f"no Pyserini 2CR scores for {condition} on {dataset}")
