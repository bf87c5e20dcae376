"""What every command shares: the one user-error type, how a CLI reports it, and the common flags.

A user error (bad input, a refused resume, a missing Java...) is one line on stderr, ``error: file:line: what``,
and exit status 2; never a traceback. Flags follow Pyserini's spellings (``--encoder``, ``--batch-size``,
``--max-length``, ``--shard-id/--shard-num``); resumable commands take ``--overwrite`` to start afresh (a finished,
matching output is otherwise reported and kept).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


class InputError(ValueError):
    """Bad user input (missing file, malformed line, refused resume...); its message is one line for the user."""


def run_cli(main, argv: Optional[Sequence[str]] = None) -> None:
    """Run a CLI ``main``; user errors become ``error: ...`` on stderr and exit status 2."""
    from .java import JavaNotFoundError
    try:
        main(argv)
    except (InputError, JavaNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # an unwritable output, a full disk...: the system's own one-line message
        print(f"error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


def positive(name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_model_args(p: argparse.ArgumentParser, batch_size: Optional[int] = None, what: str = "model") -> None:
    """The loading and batching flags every model-running command has (the model itself is ``--encoder`` or
    ``--model``, added by the command)."""
    g = p.add_argument_group(what)
    g.add_argument("--base-model", help="base of a LoRA adapter (default: the adapter's adapter_config.json)")
    g.add_argument("--tokenizer", help="default: the preset's, the model directory's, else the base model's")
    g.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16/fp16 on GPU), fp32, fp16, bf16")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--attn-implementation", default=None,
                   help="default: flash_attention_2 with flash-attn on CUDA, else sdpa")
    from .templates import BATCH_SIZE, BATCH_TOKENS
    batch_size = batch_size or BATCH_SIZE
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"at most this many sequences per forward pass (default {batch_size})")
    g.add_argument("--max-batch-tokens", type=int, default=BATCH_TOKENS,
                   help=f"and at most this many padded tokens (default {BATCH_TOKENS}; long inputs go in smaller batches, "
                        "similar lengths together: docs/benchmark-real.md)")


def add_job_args(p: argparse.ArgumentParser) -> None:
    """The one way to resume and to overwrite, for every resumable command."""
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh, discarding saved progress (the old output stays until the new one is done)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
