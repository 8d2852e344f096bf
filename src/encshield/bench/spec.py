"""The benchmark matrix: a YAML file validated into a :class:`BenchConfig`, expanded into cells.

A bench config names encoders x universal attacks (at one or more budgets) x defenses x
downstream datasets x seeds, plus the white-box rows every table needs::

    name: quickstart
    encoders: [zoo:simclr-cifar10-r18w16]
    surrogate: {dataset: tiny_imagenet, split: val, limit: 2000}
    attacks: [uap, ssp, pap, {name: advencoder, set: {epochs: 5}}]
    eps: [10/255]
    whitebox: ["pgd:eps=8/255,steps=10"]
    defenses: [none, {name: pgd_at, set: {epochs: 2}}]
    datasets: [{name: cifar10, limit_train: 5000, limit_test: 1000}]
    seeds: [0, 1]

:func:`validate_bench` checks every name, budget and dataset **before any work** and raises a
:class:`~encshield.errors.ConfigError` naming the field, the value and the allowed values.
:func:`expand` turns the config into cells (:class:`Cell`): one ``attack`` cell per encoder x
attack x budget (fitted once, on the surrogate set), one ``model`` cell per encoder x defense x
dataset x seed (defended once; a defense with a shared fine-tuning stage, ZePAD, depends on a
``finetune`` cell shared by every model asking for the same fine-tuning) and one ``evaluate``
cell per model cell (every perturbation of its encoder, transfer attacks fitted on another
encoder included, plus the white-box rows). A cell's id is the hash of everything that determines
its result, including the ids of the cells it depends on and the attack's / defense's full resolved
config (defaults included), so a changed setting or default never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from encshield.budgets import budget_label
from encshield.config import (
    apply_overrides,
    check_finite,
    parse_fractions,
    read_yaml,
    validate,
)
from encshield.errors import ConfigError
from encshield.workflows.specs import encoder_identity

__all__ = [
    "AttackEntry",
    "BenchConfig",
    "Cell",
    "DatasetEntry",
    "DefenseEntry",
    "NamedEntry",
    "SurrogateEntry",
    "MAX_SEED",
    "budget_label",
    "check_name",
    "expand",
    "load_bench_config",
    "validate_bench",
]


#: Names and labels from a config become file names (``results/<name>.db``,
#: ``attacks/<id>/<label>.safetensors``), so they are never paths: no ``/``, no ``..``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
#: Seeds are stored as SQLite INTEGERs and fed to torch generators: 0 .. 2**63 - 1.
MAX_SEED = 2**63 - 1


def check_name(value: str) -> str:
    """``value`` if it is a safe name (1-64 of ``A-Z a-z 0-9 _ . @ + -``, starting with a letter
    or digit, without ``..``), else ``ValueError`` saying how to fix it."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{value!r} is not allowed: names and labels become file names, so use 1-64 letters, "
            "digits and _ . @ + - (starting with a letter or digit, no '..'), e.g. 'adv-ft'")
    return value


def _check_seed(value: int) -> int:
    """``value`` if it is a seed in 0 .. :data:`MAX_SEED`, else ``ValueError``."""
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed {value} is out of range (seeds must fit a signed 64-bit "
                         "integer); use a seed in 0 .. 2**63 - 1")
    return value


def _check_seeds(values: list[int]) -> list[int]:
    """Seeds that fit 64 bits, without duplicates."""
    for value in values:
        _check_seed(value)
    if len(set(values)) != len(values):
        raise ValueError(f"seeds {values} contain duplicates")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SurrogateEntry(_Strict):
    """The attacker's surrogate data (disjoint from the downstream data)."""

    dataset: str = "tiny_imagenet"
    split: str = "val"
    limit: int | None = Field(5000, ge=1)

    _safe_name = field_validator("dataset")(classmethod(lambda cls, v: check_name(v)))


class NamedEntry(_Strict):
    """A registered attack or defense by name, with config overrides and an optional row label."""

    name: str
    set: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name", "label")
    @classmethod
    def _safe_names(cls, value: str | None) -> str | None:
        """The name and the optional label must be safe file names (:func:`check_name`)."""
        return None if value is None else check_name(value)

    @property
    def row(self) -> str:
        return self.label or self.name


class AttackEntry(NamedEntry):
    """A universal attack of :data:`encshield.attacks.universal.UNIVERSAL_ATTACKS`; ``encoder``
    fits it on another encoder than the model's (a transfer attack: ZePAD's BMP encoder, or an
    ``ensemble:A+B`` of public encoders; docs/methods.md, "ZePAD"), default: the model's."""

    encoder: str | None = None

#: A defense of :data:`encshield.defenses.DEFENSES`.
DefenseEntry = NamedEntry


class DatasetEntry(_Strict):
    """A downstream dataset: train split for the defense, test split for the evaluation."""

    name: str
    train_split: str = "train"
    test_split: str = "test"
    limit_train: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)
    seeds: list[int] | None = Field(None, min_length=1, description="this dataset's seeds "
                                    "(default: the config's seeds)")

    _safe_name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, values: list[int] | None) -> list[int] | None:
        return None if values is None else _check_seeds(values)

    def params(self) -> dict[str, Any]:
        """The entry as cell parameters (its seeds are not: each cell has its own seed)."""
        return self.model_dump(exclude={"seeds"})


def _entries(value: Any) -> Any:
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


class BenchConfig(_Strict):
    """One benchmark matrix (see the module docstring). Budgets accept ``10/255``."""

    name: str = "bench"
    encoders: list[str] = Field(min_length=1)
    surrogate: SurrogateEntry = Field(default_factory=SurrogateEntry)
    attacks: list[AttackEntry] = Field(default_factory=list)
    eps: list[float] = Field(default_factory=lambda: [10 / 255], min_length=1)
    attack_seed: int = 0
    whitebox: list[str] = Field(default_factory=list)
    whitebox_limit: int | None = Field(500, ge=0)
    defenses: list[DefenseEntry] = Field(default_factory=lambda: [DefenseEntry(name="none")],
                                         min_length=1)
    datasets: list[DatasetEntry] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    image_size: int | None = Field(None, ge=8, le=4096)
    batch_size: int = Field(256, ge=1, le=1 << 20)
    workers: int = Field(1, ge=1, le=1024)
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads per worker "
                                "(default: CPU cores // workers)")
    device: str = "cpu"
    data_root: str | None = None

    _normalise = field_validator("attacks", "defenses", "datasets", mode="before")(
        classmethod(lambda cls, v: _entries(v)))

    @field_validator("eps")
    @classmethod
    def _budgets_in_range(cls, values: list[float]) -> list[float]:
        for i, eps in enumerate(values):
            if not 0.0 < eps <= 1.0:
                raise ValueError(f"eps[{i}] = {eps!r} must lie in (0, 1], e.g. 10/255")
        return values

    _safe_name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))
    _seed_fits = field_validator("attack_seed")(classmethod(lambda cls, v: _check_seed(v)))

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, values: list[int]) -> list[int]:
        return _check_seeds(values)


def load_bench_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None,
                      raw: dict[str, Any] | None = None) -> BenchConfig:
    """Read a bench YAML file (or ``raw``), apply ``--set`` overrides, validate the schema.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown field or bad value.
    """
    data: dict[str, Any] = dict(raw or {})
    if path is not None:
        data.update(read_yaml(path))
    data = parse_fractions(apply_overrides(data, list(overrides or [])))  # --set on the file
    check_finite(data)
    return validate(BenchConfig, data)


def validate_bench(config: BenchConfig, *, check_files: bool = True) -> None:
    """Check every name and resource of ``config``; raise before any work is done.

    Checks: attack names and their overrides, defense names and their overrides, white-box
    specs, the uniqueness of every evaluation row, encoder and dataset entry (repeats would
    compute cells twice or collide in the store), dataset names and split strings, the device,
    and (``check_files``) that the device is present, that every encoder file or zoo entry and
    every dataset (surrogate included) can be found under the data root. ``encshield bench
    --check`` runs exactly these checks, so it refuses whatever the run would refuse.

    Raises:
        ConfigError: naming the field (e.g. ``attacks[2].name``), the value and the allowed values.
    """
    from encshield.attacks.universal import UNIVERSAL_ATTACKS
    from encshield.data.base import DATASETS
    from encshield.defenses import DEFENSES, build_defense
    from encshield.evaluation.specs import parse_whitebox, resolve_attack, validate_spec

    def check(where: str, fn: Any) -> Any:
        try:
            return fn()
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None

    for i, attack in enumerate(config.attacks):
        cls = check(f"attacks[{i}].name", lambda a=attack: UNIVERSAL_ATTACKS.get(a.name))
        check(f"attacks[{i}].set", lambda a=attack, c=cls: c(None, **parse_fractions(a.set)))
    rows = [a.row for a in config.attacks]
    if len(set(rows)) != len(rows):
        raise ConfigError(f"attacks: row names {rows} repeat; give repeated attacks a label")
    finetune_sets = []
    for i, defense in enumerate(config.defenses):
        check(f"defenses[{i}].name", lambda d=defense: DEFENSES.get(d.name))
        built = check(f"defenses[{i}].set",
                      lambda d=defense: build_defense(d.name, parse_fractions(d.set)))
        finetune_on = getattr(built.config, "finetune_on", None)
        if finetune_on:
            finetune_sets.append((f"defenses[{i}].set.finetune_on", finetune_on))
    rows = [d.row for d in config.defenses]
    if len(set(rows)) != len(rows):
        raise ConfigError(f"defenses: row names {rows} repeat; give repeated defenses a label")
    specs = []
    for i, text in enumerate(config.whitebox):
        spec = check(f"whitebox[{i}]", lambda t=text: parse_whitebox(t))
        fn = check(f"whitebox[{i}]", lambda s=spec: resolve_attack(s.name))
        check(f"whitebox[{i}]", lambda f=fn, s=spec: validate_spec(f, s))
        specs.append(spec)
    _check_unique(config, [s.row_name for s in specs])
    names = [("surrogate.dataset", config.surrogate.dataset)]
    names += [(f"datasets[{i}].name", d.name) for i, d in enumerate(config.datasets)]
    names += [(where, text.partition(":")[0]) for where, text in finetune_sets]
    for where, name in names:
        check(where, lambda n=name: DATASETS.canonical(n))
    splits = [("surrogate.split", config.surrogate.dataset, config.surrogate.split)]
    for i, d in enumerate(config.datasets):
        splits += [(f"datasets[{i}].train_split", d.name, d.train_split),
                   (f"datasets[{i}].test_split", d.name, d.test_split)]
    for where, name, split in splits:
        check(where, lambda n=name, s=split: _check_split(n, s))
    check("device", lambda: _check_device(config.device, present=check_files))
    if not check_files:
        return
    from encshield import data

    found = set(data.available(config.data_root))
    for where, name in names:
        if DATASETS.canonical(name) not in found:
            raise ConfigError(
                f"{where}: dataset {name!r} was not found under the data root "
                f"({config.data_root or os.environ.get('ENCSHIELD_DATA') or 'the user data dir'}); "
                f"found: {', '.join(sorted(found)) or 'none'}. Set ENCSHIELD_DATA / data_root, or "
                f"run `encshield data download {name}`")
    for i, spec in enumerate(config.encoders):
        check(f"encoders[{i}]", lambda s=spec: encoder_identity(s))
    for i, attack in enumerate(config.attacks):
        if attack.encoder is not None:
            check(f"attacks[{i}].encoder", lambda s=attack.encoder: encoder_identity(s))


def _check_unique(config: BenchConfig, whitebox_rows: list[str]) -> None:
    """Refuse repeats that the run would only find after work: the same evaluation row twice
    (universal rows with their budget, white-box rows, ``clean``), the same encoder, budget
    or dataset entry twice (identical cells, stored twice)."""
    from encshield.data.base import DATASETS

    def repeated(values: list[Any]) -> list[Any]:
        """The items of ``values`` that already occurred earlier in it."""
        return [v for i, v in enumerate(values) if v in values[:i]]

    labels = [budget_label(eps) for eps in config.eps]
    if repeated(labels):
        raise ConfigError(f"eps: budgets {labels} (in 1/255) repeat; list each budget once")
    universal = [a.row if len(config.eps) == 1 else f"{a.row}@{label}"
                 for a in config.attacks for label in labels]
    rows = ["clean", *universal, *whitebox_rows]
    if repeated(rows):
        raise ConfigError(f"attack rows {sorted(set(repeated(rows)))} repeat (every attack and "
                          "white-box row needs its own name, and 'clean' is taken); give them "
                          "distinct labels")
    if repeated(config.encoders):
        raise ConfigError(f"encoders: {repeated(config.encoders)[0]!r} is listed twice")
    entries = [{**d.model_dump(), "name": DATASETS.canonical(d.name)} for d in config.datasets
               if d.name in DATASETS]
    if repeated(entries):
        raise ConfigError(f"datasets: {repeated(entries)[0]['name']!r} is listed twice with the "
                          "same splits and limits; list it once")


def _check_split(dataset: str, text: str) -> None:
    """``text`` is a split the run can load: ``NAME``, ``NAME[START:STOP]`` or parts joined with
    ``+``, each a split of ``dataset``, and no slice is empty by construction."""
    from encshield.data.api import parse_split
    from encshield.data.base import DATASETS

    fmt = DATASETS.get(dataset)
    for part in str(text).split("+"):
        name, window = parse_split(part)
        fmt.check_split_name(name)
        if window is not None and window.start is not None and window.stop is not None \
                and (window.start >= 0) == (window.stop >= 0) and window.stop <= window.start:
            raise ConfigError(f"split {part!r} is empty ({window.start}:{window.stop}); "
                              "use START < STOP, e.g. train[:45000]")


def _check_device(device: str, *, present: bool) -> None:
    """``device`` names a torch device the runner supports (``cpu``, ``cuda``, ``cuda:N``,
    ``mps``) and, with ``present``, one this machine has."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{device!r} is not allowed; allowed values: cpu, cuda, cuda:N, mps")
    if not present or parsed.type == "cpu":
        return
    if parsed.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        available, count = torch.cuda.is_available(), torch.cuda.device_count()
    if not available or (parsed.index or 0) >= count:
        raise ConfigError(f"{device!r} is not available on this machine "
                          f"({count if available else 0} {parsed.type} device(s)); use cpu")


CellKind = Literal["attack", "finetune", "model", "evaluate"]


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``params`` fully determine its result; ``deps`` are cell ids."""

    kind: CellKind
    params: dict[str, Any]
    deps: tuple[str, ...] = ()
    title: str = ""
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            text = json.dumps({"kind": self.kind, "params": self.params, "deps": self.deps},
                              sort_keys=True, separators=(",", ":"), default=str)
            object.__setattr__(self, "id", hashlib.sha256(text.encode()).hexdigest()[:16])


def _resolved_attack(entry: NamedEntry) -> dict[str, Any]:
    """The attack's full config (defaults + overrides): part of the cell id, so that a changed
    default never reuses a result computed under the old one."""
    from encshield.attacks.universal import UNIVERSAL_ATTACKS

    attack = UNIVERSAL_ATTACKS.get(entry.name)(None, **parse_fractions(entry.set))
    return {"name": UNIVERSAL_ATTACKS.canonical(entry.name),
            "config": attack.config.model_dump(mode="json")}


def _resolved_defense(entry: NamedEntry) -> dict[str, Any]:
    """The defense's full config (defaults + overrides), part of the cell id."""
    from encshield.defenses import DEFENSES, build_defense

    defense = build_defense(entry.name, parse_fractions(entry.set))
    return {"name": DEFENSES.canonical(entry.name),
            "config": defense.config.model_dump(mode="json")}


def _finetune_cell(defense: NamedEntry, enc: dict[str, str], dataset: DatasetEntry, seed: int,
                   image_size: int | None) -> Cell | None:
    """The ``finetune`` cell of a defense with a shared fine-tuning stage (ZePAD's MPAE
    encoders), else ``None``. Its params hold only what determines the fine-tuning (the defense's
    :meth:`~encshield.defenses.SharedFinetuning.finetune_key`), so every defense entry and every
    downstream dataset asking for the same fine-tuning shares one cell (fine-tune once)."""
    from encshield.defenses import DEFENSES, SharedFinetuning, build_defense

    built = build_defense(defense.name, parse_fractions(defense.set))
    if not isinstance(built, SharedFinetuning):
        return None
    key = built.finetune_key(enc["sha256"])
    if key is None:
        return None
    on_downstream = key.get("finetune_on") is None
    where = f"{dataset.name}:{dataset.train_split}" if on_downstream else key["finetune_on"]
    return Cell("finetune", {
        "encoder": enc, "defense": DEFENSES.canonical(defense.name), "key": key,
        "set": built.finetune_overrides(),
        "dataset": dataset.params() if on_downstream else None,
        "seed": seed, "image_size": image_size,
    }, title=f"fine-tune {DEFENSES.canonical(defense.name)} on {where} seed {seed}")


def expand(config: BenchConfig, encoders: dict[str, dict[str, str]] | None = None) -> list[Cell]:
    """The cells of ``config`` in dependency order (attacks, fine-tunings and models before
    evaluations); a cell needed twice (a transfer attack shared by encoders, a fine-tuning
    shared by defense entries and datasets) is listed once.

    Args:
        encoders: ``{spec: encoder_identity(spec)}``; computed when not given.
    """
    identities = dict(encoders or {spec: encoder_identity(spec) for spec in config.encoders})
    for attack in config.attacks:
        if attack.encoder is not None and attack.encoder not in identities:
            identities[attack.encoder] = encoder_identity(attack.encoder)
    cells: list[Cell] = []
    listed: set[str] = set()

    def add(cell: Cell) -> Cell:
        if cell.id not in listed:
            listed.add(cell.id)
            cells.append(cell)
        return cell

    attack_cells: dict[str, list[Cell]] = {}
    for spec in config.encoders:
        attack_cells[spec] = []
        for attack in config.attacks:
            enc = identities[attack.encoder or spec]
            for eps in config.eps:
                row = attack.row if len(config.eps) == 1 else f"{attack.row}@{budget_label(eps)}"
                cell = Cell("attack", {
                    "encoder": enc, "attack": attack.name, "set": parse_fractions(attack.set),
                    "resolved": _resolved_attack(attack),
                    "eps": eps, "row": row, "surrogate": config.surrogate.model_dump(),
                    "seed": config.attack_seed, "image_size": config.image_size,
                }, title=f"fit {row} on {Path(enc['spec']).name}")
                attack_cells[spec].append(add(cell))
    for spec in config.encoders:
        enc = identities[spec]
        for dataset in config.datasets:
            for defense in config.defenses:
                resolved_defense = _resolved_defense(defense)
                for seed in dataset.seeds or config.seeds:
                    finetune = _finetune_cell(defense, enc, dataset, seed, config.image_size)
                    model = Cell("model", {
                        "encoder": enc, "defense": defense.name, "row": defense.row,
                        "set": parse_fractions(defense.set), "resolved": resolved_defense,
                        "dataset": dataset.params(),
                        "seed": seed, "image_size": config.image_size,
                    }, deps=() if finetune is None else (add(finetune).id,),
                        title=f"{defense.row} on {dataset.name} seed {seed}")
                    cells.append(model)
                    deps = (model.id, *(c.id for c in attack_cells[spec]))
                    cells.append(Cell("evaluate", {
                        "whitebox": list(config.whitebox), "whitebox_limit": config.whitebox_limit,
                        "dataset": dataset.params(), "seed": seed,
                        "batch_size": config.batch_size, "image_size": config.image_size,
                    }, deps=deps, title=f"evaluate {defense.row} on {dataset.name} seed {seed}"))
    return cells
