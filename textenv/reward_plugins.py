"""Reward plug-ins: a reward *spec* string resolved into the reward-function contract of :mod:`textenv.scorers`.

A reward function is ``(queries, responses) -> scores`` on int64 id arrays of the policy's tokenizer
(queries left-padded, responses truncated and pad-filled). :func:`resolve_reward` turns a spec into one;
``gym.make(id, reward_fn=SPEC)``, :class:`textenv.task.Task`, the ``[env] reward`` of a ``train-policy``
config and ``textenv serve-reward --model SPEC`` all go through it. A spec is, first match winning:

=================================  ===================================================================
spec                               reward
=================================  ===================================================================
``"sentiment"``, ``"rouge"``, ...  a built-in score (:data:`textenv.scorers.BUILTIN_SCORES`)
``"http://host:8008/score"``       a remote endpoint speaking the JSON protocol below (:class:`HttpReward`)
an existing folder with a marker   the plug-in that claims the marker file (:func:`register_reward_folder`;
                                   this project's reward-model folders, ``reward_model.json``, are
                                   claimed by ``rewards.serving``)
an existing folder / ``org/name``  an ``AutoModelForSequenceClassification`` checkpoint with its own
                                   tokenizer (:class:`SequenceClassifierReward`; a hub id is read from the
                                   local Hugging Face cache first, downloaded only when the hub is up)
``"package.module:function"``      a user callable with the same contract (:func:`import_callable`)
=================================  ===================================================================

Options (:class:`RewardSpec`): ``device`` and ``batch_size`` (models), ``input``/``label``/``max_length``
(sequence classifiers), ``timeout``/``retries``/``backoff`` (endpoints). A plain string takes the defaults.

**Folder plug-ins.** textenv never imports the upper layers; a folder kind is claimed by its *marker file*
through a loader ``"module:function"`` (or a callable) registered with :func:`register_reward_folder`, or
declared by an installed package as an entry point of the group ``textenv.reward_folders`` (name: the
marker file, value: ``module:function``). A loader is called as ``loader(folder, device=..., batch_size=...)``
and returns a reward function; when that function has a ``tokenizer`` attribute whose vocabulary differs
from the policy's, responses are decoded and re-tokenised for it (:class:`Retokenized`).

**The HTTP protocol, version 1** (``textenv serve-reward`` serves it; any server may). The client POSTs
JSON to the endpoint URL (``/score`` is appended when the URL has no path)::

    {"version": 1,
     "queries":   ["text", ...],          # the raw queries, decoded with the policy's tokenizer
     "responses": ["text", ...],          # the truncated responses, decoded (pads dropped)
     "query_ids":    [[int, ...], ...],   # optional: the same, as token ids (pads dropped)
     "response_ids": [[int, ...], ...],   # optional
     "tokenizer": "sha256:..."}           # optional: fingerprint of the ids' vocabulary

and the server answers ``200 {"version": 1, "scores": [float, ...]}``, one finite float per response, in
order. A server may use the ids only when the fingerprint equals its own tokenizer's
(:func:`tokenizer_fingerprint`); otherwise it re-tokenises the texts. Errors are a non-200 status with
``{"version": 1, "error": "one line"}``: 400 a bad request (wrong version, missing field), 404 an unknown
path, 413 a body over 64 MiB, 500 the scorer failed or returned NaN/inf. Versioning: the client sends its
``version``; a server refuses a version it does not speak with 400, and the client refuses an answer of
another version. Unknown fields are ignored both ways (new optional fields keep the version number).
``GET /info`` answers ``{"version": 1, "model": SPEC, "kind": KIND}``.

The client (:class:`HttpReward`) waits ``timeout`` seconds per attempt and retries connection failures,
timeouts and 429/502/503/504 answers ``retries`` times, after ``backoff * 2**k`` seconds; every other
failure (400/404/413/500, a body that is not JSON, a wrong version, a wrong number of scores, a
non-numeric or non-finite score) raises :class:`RewardEndpointError` at once, naming the URL and the fix.
It never returns a made-up score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import importlib
import json
import logging
import math
import re
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
INPUT_MODES = ("pair", "concat", "response", "chat")
ENTRY_POINT_GROUP = "textenv.reward_folders"
RETRY_STATUSES = (429, 502, 503, 504)

_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# marker file -> loader ("module:function" or a callable). The project's own reward-model folders are
# claimed here by name only (no import: the layer rule holds); other packages add theirs with
# register_reward_folder() or an entry point of ENTRY_POINT_GROUP.
FOLDER_PLUGINS: dict[str, str | Callable] = {"reward_model.json": "rewards.serving:load_reward_model_folder"}


class RewardPluginError(ValueError):
    """A reward spec that cannot be resolved; the message names the spec and the fix."""


class RewardEndpointError(RuntimeError):
    """A remote reward endpoint failed (down, timed out, garbage); the message names the URL and the fix."""


def _spec_forms() -> str:
    from textenv.scorers import BUILTIN_SCORES

    return (
        f"a built-in score {sorted(BUILTIN_SCORES)}, an existing folder (a reward-model folder or a "
        "sequence-classification checkpoint), an org/name hub id, an http(s):// URL of a reward server, "
        "or package.module:function"
    )


# ------------------------------------------------------------------------------------------ spec
@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """A reward spec string and its options; pass it as ``reward_fn=`` where a string is accepted.

    ``device``/``batch_size``: where and how many rows a model scores at once (no gradient).
    ``input``: what a sequence classifier reads: ``"pair"`` (its tokenizer's text pair query/response),
    ``"concat"`` (query + response as one text), ``"response"`` (the response alone) or ``"chat"`` (a
    user/assistant exchange through its chat template). ``label``: for a classifier with several labels,
    the label (name or index) whose log-odds is the score (one label: its logit). ``max_length``: its
    token limit (default: the model's). ``timeout`` (seconds per attempt), ``retries`` and ``backoff``
    (seconds, doubled each retry): endpoints.
    """

    spec: str
    device: str = "cpu"
    batch_size: int = 32
    input: str = "pair"
    label: str | int | None = None
    max_length: int | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise RewardPluginError(
                f"reward spec {self.spec!r} is empty or not a string; pass {_spec_forms()}."
            )
        if not isinstance(self.device, str) or not self.device:
            raise RewardPluginError(
                f"reward device={self.device!r}; pass a torch device string such as 'cpu'."
            )
        _positive_int("batch_size", self.batch_size)
        if self.max_length is not None:
            _positive_int("max_length", self.max_length)
        if self.input not in INPUT_MODES:
            raise RewardPluginError(f"reward input={self.input!r}; choose one of {list(INPUT_MODES)}.")
        if self.label is not None and (
            isinstance(self.label, bool) or not isinstance(self.label, (str, int))
        ):
            raise RewardPluginError(f"reward label={self.label!r}; pass a label name or index.")
        for name in ("timeout", "backoff"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < 0 or (name == "timeout" and value == 0):
                raise RewardPluginError(f"reward {name}={value!r}; pass a finite number of seconds > 0.")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise RewardPluginError(f"reward retries={self.retries!r}; pass an int >= 0.")

    @classmethod
    def from_options(cls, spec: str, options: Mapping[str, Any] | None = None, **defaults: Any) -> RewardSpec:
        """``RewardSpec(spec, **defaults, **options)``; an unknown option names the valid ones."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise RewardPluginError(
                f"unknown reward option(s) {unknown}; valid options: {list(OPTION_NAMES)}."
            )
        return cls(spec, **{**defaults, **options})


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RewardSpec) if f.name != "spec")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RewardPluginError(f"reward {name}={value!r}; pass an int > 0.")


def reward_kind(spec: str) -> str:
    """``"builtin"``, ``"http"``, ``"folder"`` (a plug-in's), ``"seqcls"`` or ``"callable"``; a
    :class:`RewardPluginError` naming the spec and the accepted forms otherwise."""
    from textenv.scorers import BUILTIN_SCORES

    if spec in BUILTIN_SCORES:
        return "builtin"
    if spec.startswith(("http://", "https://")):
        return "http"
    path = Path(spec).expanduser()
    if path.is_dir():
        if _folder_marker(path) is not None:
            return "folder"
        if (path / "config.json").is_file():
            return "seqcls"
        raise RewardPluginError(
            f"reward folder {spec!r} holds neither a plug-in marker {sorted(folder_plugins())} nor a "
            "config.json; pass a reward-model folder (textenv train-reward --out) or a folder saved with "
            "AutoModelForSequenceClassification.save_pretrained (with its tokenizer)."
        )
    if path.exists():
        raise RewardPluginError(f"reward {spec!r} is a file, not a folder; pass {_spec_forms()}.")
    if _CALLABLE.match(spec):
        return "callable"
    if _HUB_ID.match(spec) and not spec.startswith((".", "~")):
        return "seqcls"
    if "/" in spec or "\\" in spec:
        raise RewardPluginError(f"reward {spec!r}: no such folder; pass {_spec_forms()}.")
    raise RewardPluginError(f"Unknown built-in reward {spec!r}; pass {_spec_forms()}, or a callable.")


def resolve_reward(spec: str | RewardSpec, tokenizer: Any) -> Callable:
    """The reward function of ``spec`` for a policy with ``tokenizer`` (see the module docstring)."""
    from textenv.scorers import make_builtin_score

    spec = spec if isinstance(spec, RewardSpec) else RewardSpec(spec)
    kind = reward_kind(spec.spec)
    if kind == "builtin":
        return make_builtin_score(spec.spec, tokenizer)
    if kind == "http":
        return HttpReward(
            spec.spec,
            tokenizer,
            timeout=spec.timeout,
            retries=spec.retries,
            backoff=spec.backoff,
            batch_size=spec.batch_size,
        )
    if kind == "callable":
        return import_callable(spec.spec)
    if kind == "folder":
        fn = load_folder_reward(spec.spec, device=spec.device, batch_size=spec.batch_size)
        own = getattr(fn, "tokenizer", None)
        if own is not None and tokenizer is not None and own.get_vocab() != tokenizer.get_vocab():
            logger.warning("reward %s reads another tokenizer than the policy: re-tokenising", spec.spec)
            return Retokenized(fn, tokenizer, own)
        return fn
    return SequenceClassifierReward(
        spec.spec,
        policy_tokenizer=tokenizer,
        device=spec.device,
        batch_size=spec.batch_size,
        input=spec.input,
        label=spec.label,
        max_length=spec.max_length,
    )


# ------------------------------------------------------------------------------------ callables
def import_callable(path: str) -> Callable:
    """The object at ``"package.module:attribute"`` (dotted attributes allowed), which must be callable."""
    if not isinstance(path, str) or not _CALLABLE.match(path):
        raise RewardPluginError(
            f"{path!r} is not a 'package.module:function' import path; write e.g. 'my_rewards:score'."
        )
    module_name, attr = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RewardPluginError(
            f"reward {path!r}: cannot import module {module_name!r} ({exc}); install it or put its folder on "
            "PYTHONPATH."
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardPluginError(
                f"reward {path!r}: {getattr(obj, '__name__', module_name)!r} has no attribute {part!r}; "
                "check the name after the colon."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardPluginError(
            f"reward {path!r} is a {type(obj).__name__}, not a callable; point it at a function "
            "(queries, responses) -> scores."
        )
    return obj


# --------------------------------------------------------------------------------- folder plug-ins
def register_reward_folder(marker: str, loader: str | Callable) -> None:
    """Claim folders holding the file ``marker`` for ``loader`` (``"module:function"`` or a callable
    ``loader(folder, device=..., batch_size=...) -> reward_fn``)."""
    if not isinstance(marker, str) or not marker or "/" in marker:
        raise RewardPluginError(f"marker={marker!r}; pass a file name such as 'my_reward.json'.")
    if not callable(loader) and not (isinstance(loader, str) and _CALLABLE.match(loader)):
        raise RewardPluginError(f"loader={loader!r}; pass a callable or a 'module:function' string.")
    FOLDER_PLUGINS[marker] = loader


def folder_plugins() -> dict[str, str | Callable]:
    """The registered folder plug-ins, entry points of ``textenv.reward_folders`` included."""
    from importlib.metadata import entry_points

    found: dict[str, str | Callable] = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **FOLDER_PLUGINS}


def _folder_marker(folder: Path) -> str | None:
    for marker in folder_plugins():
        if (folder / marker).is_file():
            return marker
    return None


def load_folder_reward(folder: str | Path, *, device: str = "cpu", batch_size: int = 32) -> Callable:
    """The reward function of a plug-in folder (the plug-in that claims its marker file loads it)."""
    folder = Path(folder).expanduser()
    marker = _folder_marker(folder)
    if marker is None:
        raise RewardPluginError(
            f"{str(folder)!r} has no plug-in marker file {sorted(folder_plugins())}; pass a reward-model folder."
        )
    loader = folder_plugins()[marker]
    if isinstance(loader, str):
        loader = import_callable(loader)
    fn = loader(folder, device=device, batch_size=batch_size)
    if not callable(fn):
        raise RewardPluginError(f"the {marker} plug-in {loader!r} returned {fn!r}, not a reward function.")
    return fn


# ------------------------------------------------------------------------------ text <-> ids
def decode_rows(tokenizer: Any, rows: np.ndarray) -> list[str]:
    """Each row's text, pads dropped and special tokens skipped (what another tokenizer re-reads)."""
    pad = tokenizer.pad_token_id
    return [tokenizer.decode([int(t) for t in row if t != pad], skip_special_tokens=True) for row in rows]


def strip_pads(rows: np.ndarray, pad_id: int | None) -> list[list[int]]:
    return [[int(t) for t in row if t != pad_id] for row in np.asarray(rows)]


def padded_ids(tokenizer: Any, rows: Sequence[Sequence[int]], side: str) -> np.ndarray:
    """``rows`` as one int64 array padded with ``tokenizer``'s pad id on ``side`` (at least one column)."""
    width = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            if side == "left":
                out[i, width - len(r) :] = r
            else:
                out[i, : len(r)] = r
    return out


def encode_texts(
    tokenizer: Any, queries: Sequence[str], responses: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Texts as the reward-function contract's arrays for ``tokenizer`` (queries left-, responses right-padded)."""

    def enc(texts: Sequence[str]) -> list[list[int]]:
        return [tokenizer.encode(t, add_special_tokens=False) for t in texts]

    return padded_ids(tokenizer, enc(queries), "left"), padded_ids(tokenizer, enc(responses), "right")


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """``"sha256:..."`` of the tokenizer's vocabulary (token -> id): equal fingerprints, equal ids.
    Cached per tokenizer object while its length stays the same (a GPT-2 vocabulary takes ~0.1 s)."""
    try:
        size, fingerprint = _FINGERPRINTS.get(tokenizer, (None, None))
    except TypeError:  # not weak-referenceable or not hashable: no cache
        size, fingerprint = None, None
    if fingerprint is not None and size == len(tokenizer):
        return fingerprint
    vocab = sorted(tokenizer.get_vocab().items())
    fingerprint = "sha256:" + hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:32]
    try:
        _FINGERPRINTS[tokenizer] = (len(tokenizer), fingerprint)
    except TypeError:
        pass
    return fingerprint


class Retokenized:
    """An id-level reward function of another tokenizer: decode with the policy's, re-encode with its own."""

    needs_references = False

    def __init__(self, reward_fn: Callable, policy_tokenizer: Any, own_tokenizer: Any) -> None:
        self.reward_fn, self.policy_tokenizer, self.tokenizer = reward_fn, policy_tokenizer, own_tokenizer
        self.__name__ = f"Retokenized({getattr(reward_fn, '__name__', type(reward_fn).__name__)})"

    def __call__(self, queries: np.ndarray, responses: np.ndarray) -> np.ndarray:
        q, r = encode_texts(
            self.tokenizer,
            decode_rows(self.policy_tokenizer, queries),
            decode_rows(self.policy_tokenizer, responses),
        )
        return self.reward_fn(q, r)


# ---------------------------------------------------------------------- sequence classification
class SequenceClassifierReward:
    """An ``AutoModelForSequenceClassification`` checkpoint (folder or hub id) with its own tokenizer.

    Called with the policy's ids, it decodes them with ``policy_tokenizer`` (pads dropped, special tokens
    skipped), re-tokenises the texts with the checkpoint's tokenizer (right-padded, truncated to
    ``max_length``) and scores ``batch_size`` rows at a time on ``device`` under ``torch.inference_mode``.
    The score is the logit of a one-label head, or the log-odds ``logit_l - logsumexp(other logits)`` of
    ``label`` for a head with several labels. A checkpoint without a trained head (a causal LM, say) is
    refused rather than scored by a random head.
    """

    needs_references = False

    def __init__(
        self,
        model_id: str | Path,
        *,
        policy_tokenizer: Any = None,
        device: str = "cpu",
        batch_size: int = 32,
        input: str = "pair",
        label: str | int | None = None,
        max_length: int | None = None,
    ) -> None:
        import torch

        self.model_id, self.policy_tokenizer, self.device = str(model_id), policy_tokenizer, device
        self.batch_size, self.input = int(batch_size), input
        if input not in INPUT_MODES:
            raise RewardPluginError(f"reward input={input!r}; choose one of {list(INPUT_MODES)}.")
        self.tokenizer, model, info = _load_seqcls(self.model_id)
        missing = [k for k in info.get("missing_keys", []) if k]
        if missing:
            raise RewardPluginError(
                f"reward {self.model_id!r} has no trained classification head (missing weights "
                f"{sorted(missing)[:3]}): it is not a sequence-classification reward model; pass a checkpoint "
                "saved from AutoModelForSequenceClassification."
            )
        tok = self.tokenizer
        if tok.pad_token_id is None:
            fallback = tok.eos_token if tok.eos_token is not None else tok.unk_token
            if fallback is None:
                raise RewardPluginError(
                    f"reward {self.model_id!r}: its tokenizer has no pad, EOS or UNK token to pad batches with; "
                    "save the tokenizer with a pad token."
                )
            tok.pad_token = fallback
        tok.padding_side = "right"
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        if input == "chat" and not getattr(tok, "chat_template", None):
            raise RewardPluginError(
                f"reward {self.model_id!r}: input='chat' needs a tokenizer with a chat template, and this one "
                "has none; use input='pair', 'concat' or 'response'."
            )
        self.label_index = self._label_index(model.config, label)
        limits = [
            max_length,
            tok.model_max_length if tok.model_max_length and tok.model_max_length < 1_000_000 else None,
            getattr(model.config, "max_position_embeddings", None),
            getattr(model.config, "n_positions", None),
        ]
        self.max_length = max_length or min([m for m in limits if isinstance(m, int) and m > 0] or [512])
        try:
            self.model = model.to(device).eval().requires_grad_(False)
        except (RuntimeError, AssertionError) as exc:
            raise RewardPluginError(
                f"reward {self.model_id!r}: cannot move it to device {device!r} ({exc})."
            ) from exc
        self._torch = torch
        self.__name__ = f"SequenceClassifierReward({self.model_id})"

    def _label_index(self, config: Any, label: str | int | None) -> int | None:
        n = int(config.num_labels)
        names = {str(v): int(k) for k, v in (config.id2label or {}).items()}
        if n == 1:
            if label not in (None, 0, *names):
                raise RewardPluginError(
                    f"reward {self.model_id!r} has one output; label={label!r} does not apply (leave it unset)."
                )
            return None
        if label is None:
            raise RewardPluginError(
                f"reward {self.model_id!r} has {n} labels {names}; choose the one to reward with the option "
                "label (e.g. label='POSITIVE'): its log-odds is the score."
            )
        if isinstance(label, int) and 0 <= label < n:
            return label
        if isinstance(label, str) and label in names:
            return names[label]
        raise RewardPluginError(f"reward {self.model_id!r}: label={label!r} is not one of {names}.")

    def _encode(self, queries: Sequence[str], responses: Sequence[str]):
        tok = self.tokenizer
        kw = dict(truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        if self.input == "pair":
            return tok(list(queries), list(responses), **kw)
        if self.input == "concat":
            return tok([q + r for q, r in zip(queries, responses)], **kw)
        if self.input == "response":
            return tok(list(responses), **kw)
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": r}], tokenize=False
            )
            for q, r in zip(queries, responses)
        ]
        return tok(texts, add_special_tokens=False, **kw)

    def score_texts(self, queries: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """One float64 score per (query, response) text pair."""
        torch = self._torch
        if len(queries) != len(responses):
            raise ValueError(
                f"{len(queries)} queries for {len(responses)} responses; pass one query per response."
            )
        out = []
        for i in range(0, len(responses), self.batch_size):
            enc = self._encode(queries[i : i + self.batch_size], responses[i : i + self.batch_size])
            ids, mask = enc["input_ids"], enc["attention_mask"]
            empty = mask.sum(1) == 0  # a row with no token at all (an empty response, input='response'):
            if empty.any():  # it reads one EOS (else BOS, UNK, pad) token
                tok = self.tokenizer
                filler = next(
                    t
                    for t in (tok.eos_token_id, tok.bos_token_id, tok.unk_token_id, tok.pad_token_id)
                    if t is not None
                )
                ids[empty, 0], mask[empty, 0] = filler, 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logits = logits.double().cpu()
            if self.label_index is None:
                scores = logits[:, 0]
            else:
                others = torch.cat([logits[:, : self.label_index], logits[:, self.label_index + 1 :]], 1)
                scores = logits[:, self.label_index] - torch.logsumexp(others, 1)
            out.append(scores.numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def __call__(self, queries: np.ndarray, responses: np.ndarray) -> np.ndarray:
        if self.policy_tokenizer is None:
            raise RewardPluginError(
                f"{self.__name__} has no policy tokenizer to decode ids; pass policy_tokenizer=."
            )
        return self.score_texts(
            decode_rows(self.policy_tokenizer, queries), decode_rows(self.policy_tokenizer, responses)
        )


def _load_seqcls(model_id: str):
    """``(tokenizer, model, loading_info)`` of a folder or hub id (the local HF cache first, offline-safe)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textenv.models import cpu_linear, hub_reachable

    onednn = cpu_linear.wanted()  # TEXTENV_CPU_MATMUL, checked (a bad value named) before the load
    local = Path(model_id).expanduser().is_dir()
    path = str(Path(model_id).expanduser()) if local else model_id

    def load(**kw: Any):
        tok = AutoTokenizer.from_pretrained(path, **kw)
        model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kw)
        if onednn:  # as load_causal_lm: float32 CPU linear layers through oneDNN
            cpu_linear.use_onednn(model)
        return tok, model, info

    try:
        if local:
            return load()
        try:
            return load(local_files_only=True)
        except OSError:
            if not hub_reachable():
                raise RewardPluginError(
                    f"reward {model_id!r}: not a folder here, not in the Hugging Face cache, and the hub cannot be "
                    f"reached (offline); download it once where the hub is reachable, or pass {_spec_forms()}."
                ) from None
            return load()
    except RewardPluginError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RewardPluginError(
            f"reward {model_id!r} is not a loadable sequence-classification checkpoint ({first}); pass "
            f"{_spec_forms()}."
        ) from exc


# ----------------------------------------------------------------------------------- HTTP client
class HttpReward:
    """A reward endpoint over HTTP (protocol version 1, module docstring); see the retry rules there."""

    needs_references = False

    def __init__(
        self,
        url: str,
        tokenizer: Any = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 32,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise RewardPluginError(f"reward URL {url!r} is not an http(s)://host[:port][/path] URL.")
        self.url = url if parsed.path not in ("", "/") else url.rstrip("/") + "/score"
        self.tokenizer, self.timeout, self.retries, self.backoff = tokenizer, timeout, retries, backoff
        self.batch_size, self._sleep = batch_size, sleep
        self.fingerprint = tokenizer_fingerprint(tokenizer) if tokenizer is not None else None
        self.__name__ = f"HttpReward({self.url})"

    def __call__(self, queries: np.ndarray, responses: np.ndarray) -> np.ndarray:
        if self.tokenizer is None:
            raise RewardPluginError(f"{self.__name__} has no tokenizer to decode ids; pass tokenizer=.")
        pad = self.tokenizer.pad_token_id
        return self.score_texts(
            decode_rows(self.tokenizer, queries),
            decode_rows(self.tokenizer, responses),
            strip_pads(queries, pad),
            strip_pads(responses, pad),
        )

    def score_texts(
        self,
        queries: Sequence[str],
        responses: Sequence[str],
        query_ids: Sequence[Sequence[int]] | None = None,
        response_ids: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        out = []
        for i in range(0, len(responses), self.batch_size):
            s = slice(i, i + self.batch_size)
            payload: dict[str, Any] = {
                "version": PROTOCOL_VERSION,
                "queries": list(queries[s]),
                "responses": list(responses[s]),
            }
            if query_ids is not None and response_ids is not None and self.fingerprint is not None:
                payload.update(
                    query_ids=list(query_ids[s]),
                    response_ids=list(response_ids[s]),
                    tokenizer=self.fingerprint,
                )
            out.append(self._post(payload, len(payload["responses"])))
        return np.concatenate(out) if out else np.zeros(0)

    def _post(self, payload: dict, n: int) -> np.ndarray:
        body = json.dumps(payload).encode()
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc.read())
                if exc.code in RETRY_STATUSES:
                    failure = f"HTTP {exc.code}: {detail}"
                    continue
                raise RewardEndpointError(
                    f"reward endpoint {self.url} answered HTTP {exc.code}: {detail}; fix the request or the "
                    "server (see its log), or point env.reward at a textenv reward server."
                ) from None
            except TimeoutError:
                failure = f"no answer within {self.timeout:g} s"
                continue
            except urllib.error.URLError as exc:
                reason = exc.reason
                timed_out = isinstance(reason, TimeoutError)
                failure = f"no answer within {self.timeout:g} s" if timed_out else f"cannot connect: {reason}"
                continue
            except (http.client.HTTPException, ConnectionError, OSError) as exc:
                failure = f"connection failed: {type(exc).__name__}: {exc}"
                continue
            return self._parse(raw, n)
        attempts = self.retries + 1
        raise RewardEndpointError(
            f"reward endpoint {self.url} failed {attempts} attempt{'s' if attempts > 1 else ''} ({failure}); start "
            "it there with `textenv serve-reward --model SPEC`, check the URL, or raise the timeout/retries "
            "reward options."
        )

    def _parse(self, raw: bytes, n: int) -> np.ndarray:
        try:
            data = json.loads(raw, parse_constant=float)
        except (ValueError, UnicodeDecodeError):
            preview = raw[:60].decode("utf-8", "replace")
            raise RewardEndpointError(
                f"reward endpoint {self.url} returned garbage, not JSON ({preview!r}); is it a reward server "
                "(textenv serve-reward) speaking protocol version 1?"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("scores"), list):
            raise RewardEndpointError(
                f"reward endpoint {self.url} returned JSON without a 'scores' list ({str(data)[:60]!r}); the "
                'server must answer {"version": 1, "scores": [...]}.'
            )
        if data.get("version") != PROTOCOL_VERSION:
            raise RewardEndpointError(
                f"reward endpoint {self.url} speaks protocol version {data.get('version')!r}, this client "
                f"{PROTOCOL_VERSION}; run the same textenv version on both machines."
            )
        scores = data["scores"]
        if len(scores) != n:
            raise RewardEndpointError(
                f"reward endpoint {self.url} returned {len(scores)} scores for a batch of {n}; the server must "
                "return one score per response."
            )
        bad = [i for i, s in enumerate(scores) if isinstance(s, bool) or not isinstance(s, (int, float))]
        if bad:
            raise RewardEndpointError(
                f"reward endpoint {self.url} returned a non-numeric score {scores[bad[0]]!r} at row {bad[0]}; "
                "the server must return numbers."
            )
        try:
            out = np.asarray(scores, dtype=np.float64)
        except OverflowError:  # a JSON integer beyond float64
            row = next(i for i, x in enumerate(scores) if isinstance(x, int) and abs(x) > 1e308)
            raise RewardEndpointError(
                f"reward endpoint {self.url} returned a score too large for a float at row {row}; the server "
                "must return finite numbers."
            ) from None
        if not np.isfinite(out).all():
            rows = np.flatnonzero(~np.isfinite(out)).tolist()
            raise RewardEndpointError(
                f"reward endpoint {self.url} returned non-finite scores {out[rows].tolist()} at rows {rows}; fix "
                "the reward model on the server (NaN/inf are never replaced)."
            )
        return out


def _error_detail(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return data["error"]
    except (ValueError, UnicodeDecodeError):
        pass
    return repr(raw[:60].decode("utf-8", "replace"))


# ------------------------------------------------------------------------------- server side
class TextScorer:
    """What a reward server scores: texts (and optionally ids with a tokenizer fingerprint) -> floats.

    Built by :func:`load_text_scorer`. A sequence classifier reads the texts; an id-level reward function
    (built-in score, ``module:function``, a plug-in folder) reads the ids when the fingerprint equals its
    tokenizer's, and the texts re-encoded with its tokenizer otherwise.
    """

    def __init__(
        self,
        spec: str,
        kind: str,
        *,
        seqcls: SequenceClassifierReward | None = None,
        reward_fn: Callable | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.spec, self.kind, self.seqcls, self.reward_fn, self.tokenizer = (
            spec,
            kind,
            seqcls,
            reward_fn,
            tokenizer,
        )
        self.fingerprint = tokenizer_fingerprint(tokenizer) if tokenizer is not None else None

    def score(
        self,
        queries: Sequence[str],
        responses: Sequence[str],
        query_ids: Sequence[Sequence[int]] | None = None,
        response_ids: Sequence[Sequence[int]] | None = None,
        fingerprint: str | None = None,
    ) -> np.ndarray:
        if self.seqcls is not None:
            return self.seqcls.score_texts(queries, responses)
        assert self.reward_fn is not None
        if query_ids is not None and response_ids is not None and fingerprint == self.fingerprint:
            q = padded_ids(self.tokenizer, query_ids, "left")
            r = padded_ids(self.tokenizer, response_ids, "right")
        else:
            q, r = encode_texts(self.tokenizer, queries, responses)
        return np.asarray(self.reward_fn(q, r), dtype=np.float64)


def load_text_scorer(spec: str | RewardSpec, tokenizer: Any | str | None = None) -> TextScorer:
    """The :class:`TextScorer` of a reward spec (what ``textenv serve-reward --model SPEC`` serves).

    ``tokenizer`` (an object or a spec for :func:`textenv.models.load_tokenizer`) is the one whose ids a
    built-in score or a ``module:function`` reads; a plug-in folder brings its own, a sequence classifier
    needs none.
    """
    from textenv.scorers import make_builtin_score

    spec = spec if isinstance(spec, RewardSpec) else RewardSpec(spec)
    kind = reward_kind(spec.spec)
    if kind == "http":
        raise RewardPluginError(
            f"serving {spec.spec!r} would forward to another server; serve the model itself."
        )
    if kind == "seqcls":
        seqcls = SequenceClassifierReward(
            spec.spec,
            device=spec.device,
            batch_size=spec.batch_size,
            input=spec.input,
            label=spec.label,
            max_length=spec.max_length,
        )
        return TextScorer(spec.spec, kind, seqcls=seqcls)
    if kind == "folder":
        fn = load_folder_reward(spec.spec, device=spec.device, batch_size=spec.batch_size)
        own = getattr(fn, "tokenizer", None)
        if own is None:
            raise RewardPluginError(
                f"the plug-in of {spec.spec!r} returned a reward function without a tokenizer attribute; a server "
                "needs it to read texts."
            )
        return TextScorer(spec.spec, kind, reward_fn=fn, tokenizer=own)
    if isinstance(tokenizer, str) or tokenizer is None:
        from textenv.models import EMBEDDED_DEFAULT, load_tokenizer

        tokenizer = load_tokenizer(tokenizer or EMBEDDED_DEFAULT)
    fn = make_builtin_score(spec.spec, tokenizer) if kind == "builtin" else import_callable(spec.spec)
    if getattr(fn, "needs_references", False):
        raise RewardPluginError(
            f"reward {spec.spec!r} needs reference summaries, which protocol version 1 does not carry; serve a "
            "reward that reads only the query and the response."
        )
    return TextScorer(spec.spec, kind, reward_fn=fn, tokenizer=tokenizer)
