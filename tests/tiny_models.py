"""Tiny random LLaMA-architecture checkpoints (and random LoRA adapters) for tests and benchmarks.

Nothing is downloaded: the tokenizer is a small BPE trained on the given texts, with LLaMA's conventions
(``<s>`` prepended, ``</s>`` as EOS, pairs encoded as ``<s> A <s> B``), the model is randomly initialised.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

DEFAULT_TEXTS = [
    "what is the capital of france", "paris is the capital and most populous city of france",
    "how do goldfish grow", "goldfish grow in proportion to the size of their tank and water quality",
    "diffusion tensor imaging of the newborn brain white matter", "query passage document title text",
    "the quick brown fox jumps over the lazy dog", "retrieval with large language models and lora",
    "query: passage: document: title: hints: question: , . ? ! ( ) - ' \" / ; 0 1 2 3 4 5 6 7 8 9",
]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_tokenizer(out_dir: str, texts: Iterable[str] = DEFAULT_TEXTS, vocab_size: int = 1000):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    tok.train_from_iterator(list(texts), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return fast


def make_tiny_llama(out_dir: str, texts: Optional[Sequence[str]] = None, kind: str = "encoder",
                    hidden_size: int = 64, num_layers: int = 2, seed: int = 0, vocab_size: int = 1000,
                    max_position_embeddings: int = 4096) -> str:
    """Save a random LLaMA (``kind``: encoder -> LlamaModel, reranker -> LlamaForSequenceClassification with one
    label, causal -> LlamaForCausalLM) plus its tokenizer to ``out_dir``; returns ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel
    os.makedirs(out_dir, exist_ok=True)
    tok = make_tokenizer(out_dir, texts or DEFAULT_TEXTS, vocab_size)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_position_embeddings, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=None, num_labels=1)
    torch.manual_seed(seed)
    cls = {"encoder": LlamaModel, "reranker": LlamaForSequenceClassification, "causal": LlamaForCausalLM}[kind]
    model = cls(config)
    model.save_pretrained(out_dir)
    return out_dir


def make_random_lora(base_dir: str, out_dir: str, kind: str = "encoder", r: int = 4, seed: int = 1,
                     target_modules: List[str] = LORA_TARGETS) -> str:
    """A LoRA adapter with random (non-zero) A and B, so merging it really changes the model. A local base is
    recorded by absolute path, so the adapter resolves from any working directory."""
    import torch
    base_dir = os.path.abspath(base_dir) if os.path.isdir(base_dir) else base_dir
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForCausalLM
    cls = {"encoder": AutoModel, "reranker": AutoModelForSequenceClassification, "causal": AutoModelForCausalLM}[kind]
    kwargs = {"num_labels": 1} if kind == "reranker" else {}
    model = cls.from_pretrained(base_dir, **kwargs)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=target_modules, init_lora_weights=False,
                     modules_to_save=["score"] if kind == "reranker" else None)
    peft_model = get_peft_model(model, cfg)
    if kind == "reranker":  # a trained head differs from the base's: make the saved copy differ too
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "modules_to_save" in name:
                    p.add_(torch.randn_like(p) * 0.5)
    peft_model.save_pretrained(out_dir)
    return out_dir


def model_card_score(model, tokenizer, query_text: str, document_text: str) -> float:
    """The released model cards' scoring of one pair, the reference of the tests:
    ``model(**tokenizer(f'query: {query}', f'document: {title} {passage}', return_tensors='pt')).logits[0][0]``."""
    import torch
    inputs = tokenizer(query_text, document_text, return_tensors="pt")
    with torch.no_grad():
        return float(model(**inputs.to(next(model.parameters()).device)).logits[0][0])
