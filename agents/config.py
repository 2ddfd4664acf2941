"""The ``train-policy`` configuration: typed, range-checked tables, ``--key=value`` overrides, TOML I/O.

A config (TOML, see the presets in ``agents/configs/*.toml``) has these tables::

    [run]     algo (a name in agents.algos.ALGOS), iterations, out_dir, checkpoint_every, sample_every, ...
    [env]     task, reward ("builtin", a built-in score, a reward-model folder, a sequence-classification
              folder or hub id, an http(s):// reward server, module:function), [env.reward_options]
              (textenv.reward_plugins.RewardSpec's fields) and [env.overrides] for the task
    [policy]  model, temperature ("task": the task's), train ("full" | "top_blocks" | "lora"), ...
    [optim]   lr, lr_decay, optimizer, adam_eps, fused                (shared by every algorithm)
    [kl]      coef, adaptive, target, horizon, form, estimator        (shared; PAPER.md §1.4-1.5)
    [halt]    kl_threshold, kl_factor, kl_patience                    (shared; the andon cord)
    [ppo], [rloo], ...   each algorithm's own fields (agents.algos.ALGOS)
    [online]  labels collected while training (agents.online.OnlineConfig, ``--online``, §1.7)

Every value is validated when the config is built: a wrong type, a value out of range, NaN or inf, an
unknown table or key raise :class:`ConfigError`, one line per problem naming the key, the value and what
is allowed. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomli_w
import tomllib
import torch
from pydantic import Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from agents.algos import ALGOS
from agents.online import OnlineConfig
from agents.sections import STRICT, AlgoConfig, HaltConfig, KLConfig, OptimConfig

# The shipped presets are package data of ``agents`` (``agents/configs/*.toml``, in the wheel); the
# top-level ``configs`` folder of the checkout is a symbolic link to the same files.
PRESETS_DIR = Path(str(resources.files("agents") / "configs"))


def preset_names() -> list[str]:
    """The names of the shipped presets (``tiny_toy``, ``book_sentiment``, ...), found through the package."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


class ConfigError(ValueError):
    """A bad configuration value; the message names the key, the value and what is allowed."""


@dataclass(frozen=True, config=STRICT)
class RunSection:
    """``[run]``: the algorithm, iterations (0 = ``total_episodes / batch_size`` of the algorithm's table),
    where and how often to write. Only this table may change on ``--resume``."""

    algo: str = "ppo"
    iterations: int = Field(0, ge=0)
    out_dir: str = "runs/policy"
    checkpoint_every: int = Field(10, ge=0)
    keep_checkpoints: int = Field(2, ge=0)  # 0: keep every checkpoint
    sample_every: int = Field(10, ge=0)
    samples_shown: int = Field(4, ge=0)
    tensorboard: bool = True
    plot: bool = True
    # several processes (torchrun / accelerate launch): DistributedDataParallel, or FSDP2 sharding for a model
    # that does not fit one device; "none" refuses a multi-process launch; one process: always the plain path
    parallel: Literal["none", "ddp", "fsdp"] = "ddp"
    # "auto": CUDA when this torch sees a GPU (each process its LOCAL_RANK's), else the CPU
    device: str = "auto"
    # autocast dtype of every forward/backward; weights, optimiser state, log-softmax, KL, values stay fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # the static-shape sampler captured by torch.compile: "auto" = on CUDA only (on CPU compiling costs
    # about half a minute and the compiled steps, oneDNN inside, were no faster: BENCHMARKS.md), "on", "off"
    compile_sampler: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"run.algo={self.algo!r} is not an algorithm; choose one of {sorted(ALGOS)}.")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(
                f'run.device={self.device!r} is not a device; use "auto", "cpu", "cuda", "cuda:N" or "mps".'
            )

    @property
    def torch_device(self) -> str:
        """``device`` with ``"auto"`` resolved: ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``;
        ``"cuda"`` is ``cuda:LOCAL_RANK`` too (each process of a launch its own GPU), and stays ``"cuda"``
        without one (the run then refuses it, naming the device)."""
        if self.device not in ("auto", "cuda"):
            return self.device
        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
        return "cpu" if self.device == "auto" else "cuda"


@dataclass(frozen=True, config=STRICT)
class EnvSection:
    """``[env]``: the task id and the reward. ``reward``: ``"builtin"`` (the task's own score) or any
    reward spec of :mod:`textenv.reward_plugins`: a built-in score name, this project's reward-model
    folder, an ``AutoModelForSequenceClassification`` folder or ``org/name`` hub id, an ``http(s)://``
    endpoint of ``textenv serve-reward``, or ``package.module:function``. Models score
    ``reward_batch_size`` rows at a time on ``run.device``; ``reward_options`` holds the other
    :class:`textenv.reward_plugins.RewardSpec` fields (``input``, ``label``, ``max_length``, ``timeout``,
    ``retries``, ``backoff``)."""

    task: str = "BookSentiment-v0"
    reward: str = "builtin"
    reward_batch_size: int = Field(64, gt=0)
    reward_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    @field_validator("reward_options")
    @classmethod
    def _reward_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from textenv.reward_plugins import OPTION_NAMES

        allowed = [n for n in OPTION_NAMES if n not in ("device", "batch_size")]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown reward option(s) {unknown}; valid: {allowed} (the device is run.device, the batch "
                "size env.reward_batch_size)"
            )
        return value


@dataclass(frozen=True, config=STRICT)
class PolicySection:
    """``[policy]``: the LM spec, the sampling temperature (``"task"``: the task's own, 0.7 or 0.5), what
    trains, and the value function (``"shared"``: the paper's head on the policy trunk, or a reward-model
    folder)."""

    model: str = "smollm2-135m"
    temperature: float | Literal["task"] = "task"
    train: Literal["full", "top_blocks", "lora"] = "full"
    top_blocks: int = Field(2, ge=0)
    lora_r: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    value: str = "shared"

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature(cls, value: Any) -> float | str:
        if value == "task":
            return value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError('use a finite number > 0, or "task" for the task\'s own (0.7; CNN/DM 0.5)')
        return float(value)


FIXED_TABLES: dict[str, type] = {
    "run": RunSection,
    "env": EnvSection,
    "policy": PolicySection,
    "optim": OptimConfig,
    "kl": KLConfig,
    "halt": HaltConfig,
}


def table_names() -> list[str]:
    return [*FIXED_TABLES, *ALGOS, "online"]


def _fields(klass: type) -> list[str]:
    return [f.name for f in dataclasses.fields(klass) if f.name not in AlgoConfig.SHARED]


def table_fields() -> dict[str, list[str]]:
    """Every table's keys (the algorithm tables without the shared sections)."""
    out = {name: _fields(k) for name, k in FIXED_TABLES.items()}
    out.update({name: _fields(algo.config) for name, algo in ALGOS.items()})
    out["online"] = _fields(OnlineConfig)
    return out


def _lookup(values: Any, loc: tuple, default: Any) -> Any:
    """The value the user gave at ``loc`` (pydantic reports nested inputs as whole sub-tables)."""
    for part in loc:
        if not isinstance(values, dict) or part not in values:
            return default
        values = values[part]
    return values


def _type_hint(err: dict) -> str:
    """How to write a value of the wrong type (types are strict: nothing is coerced)."""
    given = err.get("input")
    if err["type"] == "int_type" and isinstance(given, float) and given.is_integer():
        return f" (write it without a decimal point or exponent: {int(given)})"
    if err["type"] in ("int_type", "float_type") and isinstance(given, bool):
        return " (a number, not true/false)"
    if err["type"] == "bool_type":
        return " (write true or false)"
    return ""


def _format_error(table: str, values: dict, exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"[{table}] {exc}"
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or len(err["loc"]) > 1)
        msg = err["msg"].removeprefix("Value error, ")
        if loc:
            value = _lookup(values, err["loc"], err.get("input"))
            lines.append(f"{table}.{loc} = {value!r}: {msg[0].lower()}{msg[1:]}{_type_hint(err)}")
        else:
            lines.append(f"[{table}] {msg}")
    return "\n".join(lines)


def build_section(table: str, klass: type, values: dict, **shared: Any) -> Any:
    """``klass(**values)``, with an unknown key or a bad value turned into a :class:`ConfigError`."""
    known = _fields(klass)
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = [f"{k!r} is in [{t}]" for k in unknown for t, keys in table_fields().items() if k in keys]
        raise ConfigError(
            f"unknown key(s) {unknown} in [{table}]"
            + (f" ({'; '.join(hints)})" if hints else "")
            + f"; valid keys: {known}."
        )
    try:
        return klass(**values, **shared)
    except (ValidationError, ValueError, TypeError) as exc:
        raise ConfigError(_format_error(table, values, exc)) from None


class TrainConfig:
    """A validated ``train-policy`` config: one attribute per table; ``algos[name]`` holds every
    algorithm's config composed with the shared ``optim``/``kl``/``halt`` sections."""

    def __init__(self, tables: dict[str, Any], algos: dict[str, AlgoConfig]) -> None:
        self.run: RunSection = tables["run"]
        self.env: EnvSection = tables["env"]
        self.policy: PolicySection = tables["policy"]
        self.optim: OptimConfig = tables["optim"]
        self.kl: KLConfig = tables["kl"]
        self.halt: HaltConfig = tables["halt"]
        self.online: OnlineConfig = tables["online"]
        self.algos = algos

    def __getattr__(self, name: str) -> AlgoConfig:  # cfg.ppo, cfg.rloo, ...
        algos = self.__dict__.get("algos", {})
        if name in algos:
            return algos[name]
        raise AttributeError(name)

    @property
    def algo_config(self) -> AlgoConfig:
        """The config of the algorithm that runs (``run.algo``)."""
        return self.algos[self.run.algo]

    @property
    def iterations(self) -> int:
        return self.run.iterations or self.algo_config.num_updates

    def temperature(self) -> float:
        """``policy.temperature``, or the task's own when it is ``"task"``."""
        if self.policy.temperature != "task":
            return float(self.policy.temperature)
        from textenv.tasks import get_task

        return get_task(self.env.task, **self.env.overrides).temperature

    def to_dict(self) -> dict:
        out = {name: dataclasses.asdict(getattr(self, name)) for name in FIXED_TABLES}
        for name, algo in self.algos.items():
            out[name] = {k: v for k, v in dataclasses.asdict(algo).items() if k not in AlgoConfig.SHARED}
        out["online"] = dataclasses.asdict(self.online)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        unknown = sorted(set(data) - set(table_names()))
        if unknown:
            raise ConfigError(f"unknown config table(s) {unknown}; the tables are {table_names()}.")
        for name, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"[{name}] must be a table of key = value entries, got {values!r}.")
        errors: list[str] = []

        def build(name: str, klass: type, **shared: Any) -> Any:
            try:
                return build_section(name, klass, dict(data.get(name, {})), **shared)
            except ConfigError as exc:
                errors.append(str(exc))

        tables = {name: build(name, k) for name, k in FIXED_TABLES.items()}
        tables["online"] = build("online", OnlineConfig)
        # a bad shared section is reported above; the algorithm tables are still checked, against defaults
        shared = {name: tables[name] or FIXED_TABLES[name]() for name in AlgoConfig.SHARED}
        algos = {name: build(name, algo.config, **shared) for name, algo in ALGOS.items()}
        if tables["env"] is not None:
            errors.extend(_check_task(tables["env"]))
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(tables, algos)


def _check_task(env: EnvSection) -> list[str]:
    """The task id and ``[env.overrides]``, checked as the env will check them (no tokenizer needed)."""
    from textenv.families import FAMILIES
    from textenv.tasks import get_task

    try:
        task = get_task(env.task, **env.overrides)
    except (ValueError, TypeError) as exc:
        return [f"[env] {exc}"]
    if task.family not in FAMILIES:
        return [f"[env] family={task.family!r} is not a data family; choose one of {sorted(FAMILIES)}."]
    return []


# ------------------------------------------------------------------------------------- overrides
def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def _split(item: str) -> tuple[str, str]:
    text = item[2:] if item.startswith("--") else item
    if "=" not in text:
        raise ConfigError(f"override {item!r} must look like --table.key=value (e.g. --optim.lr=2e-5).")
    key, raw = text.split("=", 1)
    return key, raw


def _owner(item: str, key: str, algo: str, fields: dict[str, list[str]]) -> str:
    """The table of a bare ``--key=value``: the one table that has it, or the running algorithm's."""
    owners = [t for t, keys in fields.items() if key in keys]
    if len(owners) > 1 and set(owners) <= set(ALGOS) and algo in owners:
        owners = [algo]
    if len(owners) != 1:
        where = "in no table" if not owners else f"in several tables {owners}"
        raise ConfigError(f"override {item!r}: {key!r} is {where}; write it as --table.key=value.")
    return owners[0]


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` / ``--key=value`` strings (dotted or unique bare keys) to a config dict."""
    data = json.loads(json.dumps(data))
    fields = table_fields()
    algo = data.get("run", {}).get("algo", "ppo")
    for item in overrides:  # the last --run.algo / --algo given wins, wherever it stands
        key, raw = _split(item)
        if key in ("run.algo", "algo"):
            algo = _parse_value(raw)
    for item in overrides:
        key, raw = _split(item)
        parts = key.split(".")
        if len(parts) == 1:
            parts = [_owner(item, parts[0], algo, fields), parts[0]]
        table = parts[0]
        if table not in fields:
            raise ConfigError(f"override {item!r}: no table {table!r}; the tables are {table_names()}.")
        if len(parts) == 2 and parts[1] not in fields[table]:
            hint = [t for t, keys in fields.items() if parts[1] in keys]
            raise ConfigError(
                f"override {item!r}: no key {parts[1]!r} in [{table}]"
                + (f" (it is in [{hint[0]}])" if hint else "")
                + f"; valid keys: {sorted(fields[table])}."
            )
        node = data.setdefault(table, {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(raw)
    return data


# -------------------------------------------------------------------------------------- TOML files
def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a shipped preset (``book_sentiment`` -> the package's
    ``agents/configs/book_sentiment.toml``); an existing file at ``path`` comes first."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = PRESETS_DIR / (p.name if p.suffix == ".toml" else p.name + ".toml")
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"no config file {str(path)!r}; pass a path or one of the presets {preset_names()}."
    )


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) TOML file.") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    data = {}
    if path is not None:
        resolved = resolve_config_path(path)
        data = read_toml(resolved)
        if not data:
            raise ConfigError(
                f"{resolved}: the config file is empty; start from a preset, e.g. --config tiny_toy."
            )
    return TrainConfig.from_dict(apply_overrides(data, list(overrides)))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def dump_toml(cfg: TrainConfig) -> str:
    """The resolved config as TOML (``tomli-w``; ``None`` entries, which mean "default", are left out)."""
    return tomli_w.dumps(_drop_none(cfg.to_dict()))
