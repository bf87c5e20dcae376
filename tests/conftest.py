"""Shared fixtures: the real data directory and tiny random LLaMA checkpoints (built once per session)."""
import os

import pytest

from repllama_pyserini.formats import data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ir_data():
    d = data_dir()
    if not os.path.isdir(os.path.join(d, "topics-and-qrels")):
        pytest.skip(f"real data not found at {d} (set REPLLAMA_PYSERINI_DATA)")
    return d


def _tiny(tmp_path_factory, kind):
    from tiny_models import make_random_lora, make_tiny_llama
    root = tmp_path_factory.mktemp(f"tiny-{kind}")
    base = make_tiny_llama(str(root / "base"), kind=kind)
    lora = make_random_lora(base, str(root / "lora"), kind=kind)
    return {"base": base, "lora": lora}


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """{'base': dir of a random LlamaModel + tokenizer, 'lora': dir of a random LoRA adapter naming that base}."""
    return _tiny(tmp_path_factory, "encoder")


@pytest.fixture(scope="session")
def tiny_reranker(tmp_path_factory):
    """Same for LlamaForSequenceClassification(num_labels=1); the adapter also saves the score head."""
    return _tiny(tmp_path_factory, "reranker")


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory):
    return _tiny(tmp_path_factory, "causal")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster, and immune to spin-waiting when the cores are shared
    (``pytestmark = pytest.mark.usefixtures("one_thread")``); the thread count is restored after the module."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
