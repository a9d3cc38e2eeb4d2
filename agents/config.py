"""Run configuration for ``train_rl.py`` / ``evaluate.py``: typed dataclasses, YAML presets, ``a.b=value`` overrides.

A run is described by one :class:`TrainConfig` passed whole. It is built in three layers:
dataclass defaults <- a preset (``configs/<name>.yaml`` or any YAML file, partial) <- command-line
overrides ``section.field=value``. Every layer is validated against the dataclass schema: an unknown
field raises :class:`ConfigError` naming the field and the allowed ones, a malformed value names the
field and the expected type. The resolved config is written to ``RUN_DIR/config.yaml`` and can be fed
back with ``--config`` to repeat the run.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from memory.config import MEMORY_NAMES, MemoryConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PRESET = "tmaze_hqlt"
VEC_ENVS = ("auto", "subproc", "dummy")
LR_SCHEDULES = ("constant", "linear", "decay_on_success")


class ConfigError(ValueError):
    """A config that cannot be used: unknown field, malformed value, missing preset."""


@dataclass(frozen=True)
class EnvConfig:
    """The environment the agent trains and is evaluated on."""

    id: str = "hqlt/PassiveTMaze-v0"
    """Gymnasium id (importing ``envs`` registers the ``hqlt/`` ids); see ``--list-envs``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make``, e.g. ``env.kwargs.memory_length=100``."""


@dataclass(frozen=True)
class MemorySection(MemoryConfig):
    """Which memory the agent uses (``name``) and every MemoryConfig field of it."""

    name: str = "hqlt"
    """Memory kind: hqlt, kv, deltanet, linear, lstm, gru or none."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name.lower() not in MEMORY_NAMES:
            raise ValueError(f"memory config field 'name'={self.name!r} is unknown; allowed: {', '.join(MEMORY_NAMES)}")
        super().__post_init__()

    def memory_kwargs(self) -> dict[str, Any]:
        """The MemoryConfig fields (all but ``name``) as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(MemoryConfig)}


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (Stable-Baselines3 names)."""

    learning_rate: float = 3e-4
    """Adam learning rate (start value when lr_schedule=linear)."""
    lr_schedule: str = "constant"
    """constant; linear (decay to 0 at total_timesteps); or decay_on_success (constant until the success rate of the
    last lr_decay_window training episodes reaches lr_decay_threshold, then linear decay to 0 at total_timesteps)."""
    lr_decay_threshold: float = 0.9
    """Success rate that starts the decay when lr_schedule (or ent_schedule) is decay_on_success."""
    lr_decay_window: int = 100
    """Training episodes whose success rate is compared with lr_decay_threshold."""
    n_steps: int = 128
    """Rollout length per environment between updates."""
    seq_len: int = 64
    """Length of the stored sequences replayed in training (memory state saved at each sequence start)."""
    batch_size: int = 256
    """Minibatch size in steps (a multiple of seq_len)."""
    n_epochs: int = 4
    """Passes over each rollout."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO policy clip range."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient (start value when ent_schedule is not constant)."""
    ent_schedule: str = "constant"
    """The entropy coefficient's schedule, as lr_schedule's: constant; linear (to 0 at total_timesteps); or
    decay_on_success (constant until the same trigger as lr_schedule's, lr_decay_threshold over lr_decay_window
    episodes, then linear to 0 at total_timesteps). On the T-Maze decaying it did not make greedy play match sampled
    play (docs/results.md#greedy-entropy-decay), so the presets keep it constant."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    target_kl: float | None = None
    """Stop an update's epochs early when the approximate KL exceeds this (none: never)."""
    dual_clip: float | None = None
    """Dual-clip PPO bound c > 1 on the objective of negative-advantage samples (none: SB3's objective)."""
    memory_reset_prob: float = 0.0
    """Probability, per env and stored sequence, of setting the memory to its initial state where the sequence starts
    (so a memory carried across episodes also learns to act from a fresh state); 0: never."""
    normalize_advantage: bool = True
    """Normalise advantages per minibatch."""

    def __post_init__(self) -> None:
        for name in ("lr_schedule", "ent_schedule"):
            if getattr(self, name) not in LR_SCHEDULES:
                raise ValueError(
                    f"config field 'ppo.{name}'={getattr(self, name)!r} is unknown; allowed: {', '.join(LR_SCHEDULES)}"
                )
        if not self.ent_coef >= 0:
            raise ValueError(f"config field 'ppo.ent_coef' must be >= 0, got {self.ent_coef!r}")
        if not 0.0 < self.lr_decay_threshold <= 1.0:
            raise ValueError(
                f"config field 'ppo.lr_decay_threshold' must be a success rate in (0, 1], got {self.lr_decay_threshold!r}"
            )
        for name in ("n_steps", "seq_len", "batch_size", "n_epochs", "lr_decay_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field 'ppo.{name}' must be positive, got {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"config field 'ppo.learning_rate' must be > 0, got {self.learning_rate!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"config field 'ppo.{name}' must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.memory_reset_prob <= 1.0:
            raise ValueError(
                f"config field 'ppo.memory_reset_prob' must be a probability in [0, 1], got {self.memory_reset_prob!r}"
            )
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(
                f"config field 'ppo.dual_clip' must be > 1 (typically 3), or none to disable it; got {self.dual_clip!r}"
            )


POLICIES = ("auto", "MlpMemoryPolicy", "CnnMemoryPolicy", "MultiInputMemoryPolicy")


@dataclass(frozen=True)
class PolicyConfig:
    """The layers around the memory: features extractor and actor/critic heads."""

    name: str = "auto"
    """MlpMemoryPolicy, CnnMemoryPolicy (image / grid observations), MultiInputMemoryPolicy (dict) or auto (by space)."""
    net_arch: list[int] = field(default_factory=lambda: [64])
    """Hidden sizes of the actor and critic MLP heads on top of the memory output."""
    critic_memory: bool = False
    """Give the critic its own memory (default: actor and critic share one memory trunk)."""
    prev_action_reward: bool = False
    """Also feed the previous action and reward to the memory."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further policy_kwargs passed to the policy as they are (e.g. ``policy.extra.ortho_init=false``)."""

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"config field 'policy.name'={self.name!r} is unknown; allowed: {', '.join(POLICIES)}")
        if any(h <= 0 for h in self.net_arch):
            raise ValueError(f"config field 'policy.net_arch' must hold positive sizes, got {self.net_arch!r}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run, passed whole to ``train_rl.train``."""

    name: str = DEFAULT_PRESET
    """Run name; the default run directory is runs/<name>-<timestamp>."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment section."""
    memory: MemorySection = field(default_factory=MemorySection)
    """Memory section."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO section."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy section."""
    total_timesteps: int = 100_000
    """Environment steps to train for (all environments together)."""
    n_envs: int = 8
    """Environments stepped in parallel."""
    vec_env: str = "auto"
    """subproc (one process per env), dummy (in process) or auto (subproc when n_envs > 1)."""
    seed: int = 0
    """Seed of torch, numpy, the action space and the environments (env i gets seed + i)."""
    device: str = "auto"
    """Torch device for the policy: auto, cpu, cuda, cuda:1, ..."""
    torch_threads: int = 1
    """torch.set_num_threads for this process (keep small on shared CPUs)."""
    run_dir: str | None = None
    """Where everything is written; none: runs/<name>-<timestamp>."""
    checkpoint_freq: int = 10_000
    """Save a checkpoint every this many environment steps (0: only at the end / on Ctrl-C)."""
    eval_freq: int = 10_000
    """Evaluate on a separate environment every this many environment steps (0: never)."""
    eval_episodes: int = 32
    """Episodes per evaluation during training."""
    eval_deterministic: bool = True
    """Greedy actions during evaluation."""
    normalize_reward: bool = False
    """Wrap the training envs in VecNormalize(norm_obs=False, norm_reward=True); stats are checkpointed."""
    progress_bar: bool = True
    """Show a progress bar with steps/s and the recent success rate."""
    log_interval: int = 1
    """Write SB3's rollout/train scalars every this many rollouts."""

    def __post_init__(self) -> None:
        for name in ("total_timesteps", "n_envs", "torch_threads", "eval_episodes", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field '{name}' must be positive, got {getattr(self, name)!r}")
        for name in ("checkpoint_freq", "eval_freq"):
            if getattr(self, name) < 0:
                raise ValueError(f"config field '{name}' must be >= 0, got {getattr(self, name)!r}")
        if self.vec_env not in VEC_ENVS:
            raise ValueError(f"config field 'vec_env'={self.vec_env!r} is unknown; allowed: {', '.join(VEC_ENVS)}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"config field 'name'={self.name!r} must be a plain, non-empty file name")

    def vec_env_kind(self) -> str:
        """subproc or dummy, resolving ``auto``."""
        if self.vec_env == "auto":
            return "subproc" if self.n_envs > 1 else "dummy"
        return self.vec_env


# ---------------------------------------------------------------------------------------------------------------------
# Schema helpers


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right under each field) of a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    if origin is dict:
        return "mapping"
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null", "~", "")


def parse_scalar(text: str) -> Any:
    """A command-line value for an untyped slot (env kwargs): YAML scalar, with 3e-4-style floats understood."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value.replace("_", ""))
            except ValueError:
                pass
    return value


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check / convert ``value`` (from YAML or a command-line string) to type ``tp`` for field ``where``."""

    def bad() -> ConfigError:
        return ConfigError(f"config field '{where}' expects {_type_name(tp)}, got {value!r}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return parse_scalar(value) if isinstance(value, str) else value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        rest = [a for a in args if a is not type(None)]
        errors = []
        for option in rest:
            try:
                return coerce(value, option, where)
            except ConfigError as err:
                errors.append(err)
        raise bad()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            try:
                return int(text)
            except ValueError:
                try:
                    as_float = float(text)  # 1e5
                except ValueError:
                    raise bad() from None
                if as_float.is_integer():
                    return int(as_float)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip().replace("_", ""))
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if origin is list:
        if isinstance(value, str):
            text = value.strip()
            parsed = parse_scalar(text if text.startswith("[") else f"[{text}]")
            if not isinstance(parsed, list):
                raise bad()
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if isinstance(value, str):
            value = parse_scalar(value) if value.strip() else {}
        if value is None:
            value = {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad()
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{where}' is a section ({_fields_list(tp)}), got {value!r}")
        return _build(tp, value, prefix=f"{where}.")
    raise bad()  # pragma: no cover - a field type this parser does not know


def _fields_list(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _unknown(cls: type, key: str, prefix: str) -> ConfigError:
    import difflib

    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    where = f"section '{prefix[:-1]}'" if prefix else "the top level"
    return ConfigError(f"unknown config field '{prefix}{key}'{hint}; allowed in {where}: {', '.join(names)}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown(cls, str(key), prefix)
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from a (possibly partial) nested dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections and fields, got {type(data).__name__}")
    return _build(TrainConfig, data)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (YAML-safe) of a config."""
    return dataclasses.asdict(cfg)


def apply_override(data: dict[str, Any], item: str, schema: type = TrainConfig) -> None:
    """Apply one ``dotted.key=value`` override to the nested dict ``data`` in place (validating key and value)."""
    if "=" not in item:
        raise ConfigError(f"malformed override {item!r}: expected key=value, e.g. memory.window=16 or ppo.learning_rate=3e-4")
    key, raw = item.split("=", 1)
    key = key.strip().removeprefix("--")
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"malformed override {item!r}: empty field name")
    cls, node = schema, data
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i]) + ("." if i else "")
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            raise _unknown(cls, part, prefix)
        tp = _type_hints(cls)[part]
        if i == len(parts) - 1:
            node[part] = coerce(raw, tp, key)
            return
        if dataclasses.is_dataclass(tp):
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            cls, node = tp, child
        elif typing.get_origin(tp) is dict:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            child[".".join(parts[i + 1 :])] = parse_scalar(raw)
            return
        else:
            raise ConfigError(f"config field '{prefix}{part}' is a {_type_name(tp)} and has no sub-field '{parts[i + 1]}'")


def list_presets() -> list[str]:
    """Names of the presets shipped in configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections and fields, got {type(data).__name__}")
    return data


def preset_path(name_or_path: str) -> Path:
    """configs/<name>.yaml for a preset name, or the path itself when it names a file."""
    as_path = Path(name_or_path)
    if as_path.suffix in (".yaml", ".yml") or as_path.is_file():
        return as_path
    path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; available presets: {', '.join(list_presets()) or '(none)'}")
    return path


def resolve_config(
    preset: str | None = None, config: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Defaults <- preset (by name) or full config file <- overrides; validated.

    A preset without a ``name`` field is named after its file (configs/tmaze_lstm.yaml -> tmaze_lstm).
    """
    if preset is not None and config is not None:
        raise ConfigError("give either --preset or --config, not both")
    if config is not None:
        data = read_yaml(config)
    else:
        path = preset_path(preset or DEFAULT_PRESET)
        data = read_yaml(path)
        data.setdefault("name", path.stem)
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def load_config(path: str | Path) -> TrainConfig:
    return config_from_dict(read_yaml(path))


def describe_fields(cls: type = TrainConfig, prefix: str = "", defaults: Any = None) -> list[str]:
    """One help line per leaf field: ``key (type, default X): doc``."""
    defaults = cls() if defaults is None else defaults
    docs = field_docs(cls)
    hints = _type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(tp):
            lines.append(f"[{prefix}{f.name}] {docs.get(f.name, '')}")
            lines.extend(describe_fields(tp, f"{prefix}{f.name}.", value))
            continue
        default = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, default {default}): {docs.get(f.name, '')}")
    return lines
