"""The prompt corpora behind :mod:`textenv.data`: shared plumbing, preprocessing and one loader per family.

* :mod:`~textenv.corpora.common`: the record types, deterministic splits, file readers and hub access;
* :mod:`~textenv.corpora.preprocess`: the paper's text cleaning and token-level trimming (pure functions);
* :mod:`~textenv.corpora.books`, :mod:`~textenv.corpora.cnndm`, :mod:`~textenv.corpora.tldr`: the loaders.

Import them through :mod:`textenv.data`, which re-exports every public name and holds ``LOADERS``.
"""
