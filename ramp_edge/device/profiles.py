"""Device profiles: typed records loaded from `device_profiles/<id>.toml`, plus measured overlays.

A profile says what a device offers a model: RAM usable for it, effective memory bandwidth for
decoding, CPU features that pick llama.cpp kernels, and published reference throughput with its
source. `ramp-edge profile` measures a host into a `MeasuredProfile`; the measurement merges over
the static profile (measured wins), see `DeviceProfile.merged`.

To add a device, copy a TOML file, change `id` (== file stem) and the numbers; a test loads every
file in the directory. Units are in field names: TOML uses GiB and GB/s for readability, the
records hold bytes and bytes per second.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramp_edge.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
GIB = 1 << 30
GB = 1e9
LOCALHOST = "localhost"

ARCHES = ("aarch64", "x86_64")
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def profiles_dir() -> Path:
    """The repository's `device_profiles/`, else the copy shipped inside the package."""
    repo = Path(__file__).resolve().parents[2] / "device_profiles"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parents[1] / "device_profiles"


def normalize_arch(arch: str) -> str:
    key = arch.strip().lower()
    return _ARCH_ALIASES.get(key, key)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class ReferenceThroughput:
    """A published throughput figure: what ran, how fast, and where it was reported."""

    model: str
    quant: str
    engine: str
    test: str  # "tg" (generation), "pp" (prompt processing), or llama-bench style "tg128"
    tokens_per_s: float
    source: str  # URL or citation
    model_file_bytes: int | None = None  # file size, when known: tokens/s x bytes = bandwidth
    note: str = ""

    def __post_init__(self) -> None:
        if not self.tokens_per_s > 0:
            raise ConfigError(f"reference {self.model}: tokens_per_s must be > 0")

    @property
    def is_generation(self) -> bool:
        return self.test.startswith("tg") or self.test in ("eval", "generation")

    @property
    def effective_bandwidth_bytes_per_s(self) -> float | None:
        """Bytes read per second implied by a generation figure (decode reads every weight once)."""
        if not self.is_generation or not self.model_file_bytes:
            return None
        return self.tokens_per_s * self.model_file_bytes

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceThroughput:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True, slots=True)
class TypeSpeed:
    """llama.cpp speed of one reference GGUF on a host (one quant type, or a mix).

    `bytes_by_type` holds the bytes of the weight matrices (2-D tensors) per ggml type that
    one decoded token reads; the latency model is fitted on it (`budget.latency_model`).
    """

    qtype: str  # the type requested (pure quantization); "mix" or a recipe name otherwise
    model: str
    file_bytes: int
    bytes_by_type: tuple[tuple[str, int], ...]
    n_threads: int
    n_prompt: int
    n_gen: int
    pp_tokens_per_s: float
    tg_tokens_per_s: float
    tg_samples_tokens_per_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.tg_tokens_per_s > 0:
            raise ConfigError(f"type speed {self.qtype}: tg_tokens_per_s must be > 0")

    @property
    def read_bytes(self) -> int:
        return sum(b for _, b in self.bytes_by_type)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["bytes_by_type"] = dict(self.bytes_by_type)
        d["tg_samples_tokens_per_s"] = list(self.tg_samples_tokens_per_s)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TypeSpeed:
        return cls(
            qtype=str(d["qtype"]),
            model=str(d["model"]),
            file_bytes=int(d["file_bytes"]),
            bytes_by_type=tuple((str(k), int(v)) for k, v in dict(d["bytes_by_type"]).items()),
            n_threads=int(d["n_threads"]),
            n_prompt=int(d["n_prompt"]),
            n_gen=int(d["n_gen"]),
            pp_tokens_per_s=float(d["pp_tokens_per_s"]),
            tg_tokens_per_s=float(d["tg_tokens_per_s"]),
            tg_samples_tokens_per_s=tuple(float(x) for x in d.get("tg_samples_tokens_per_s", ())),
        )


@dataclass(frozen=True, slots=True)
class MeasuredProfile:
    """What `ramp-edge profile` measured on a host, with when and by which probe version."""

    device: str
    host: str
    created_utc: str
    agent_version: str
    arch: str
    cpu: str
    cores: int  # physical cores (llama.cpp's default thread count)
    logical_cpus: int
    cpu_features: tuple[str, ...]
    ram_total_bytes: int
    ram_available_bytes: int
    bandwidth_copy_bytes_per_s: float | None  # numpy copy, read + write bytes counted
    llama_system_info: str = ""
    llama_cpp_version: str = ""
    type_speeds: tuple[TypeSpeed, ...] = ()
    load_avg_1m: float | None = None  # host load when measured: other jobs slow llama.cpp down
    # how it was measured: "agent over ssh root@127.0.0.2:2222" or "agent on localhost"
    source: str = ""
    # the agent's probe (JSON-able): python, llama_cpp (version, backends, ggml types), gpu
    # (unified memory, GPU memory), disk_free_bytes, thermal, cgroup_memory_limit_bytes
    facts: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["facts"] = dict(self.facts)
        d["cpu_features"] = list(self.cpu_features)
        d["type_speeds"] = [s.to_dict() for s in self.type_speeds]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MeasuredProfile:
        bw = d.get("bandwidth_copy_bytes_per_s")
        return cls(
            device=str(d["device"]),
            host=str(d["host"]),
            created_utc=str(d["created_utc"]),
            agent_version=str(d["agent_version"]),
            arch=normalize_arch(str(d["arch"])),
            cpu=str(d.get("cpu", "")),
            cores=int(d["cores"]),
            logical_cpus=int(d.get("logical_cpus", d["cores"])),
            cpu_features=tuple(str(x) for x in d.get("cpu_features", ())),
            ram_total_bytes=int(d["ram_total_bytes"]),
            ram_available_bytes=int(d["ram_available_bytes"]),
            bandwidth_copy_bytes_per_s=None if bw is None else float(bw),
            llama_system_info=str(d.get("llama_system_info", "")),
            llama_cpp_version=str(d.get("llama_cpp_version", "")),
            type_speeds=tuple(TypeSpeed.from_dict(s) for s in d.get("type_speeds", ())),
            load_avg_1m=None if d.get("load_avg_1m") is None else float(d["load_avg_1m"]),
            source=str(d.get("source", "")),
            facts=dict(d.get("facts") or {}),
        )


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A device's static facts (from TOML), optionally overlaid with a measurement."""

    id: str
    name: str
    arch: str
    cpu: str
    cores: int
    threads: int  # threads llama.cpp should use
    cpu_features: tuple[str, ...]
    accelerator: str  # "none", "cuda", "metal", ...
    ram_total_bytes: int
    ram_usable_bytes: int  # what a model process may take after the OS and services
    bandwidth_effective_bytes_per_s: float  # decode bandwidth for a Q4_0-speed type
    bandwidth_peak_bytes_per_s: float | None = None  # spec sheet, never used for budgets
    bandwidth_note: str = ""  # how the effective bandwidth was derived
    token_overhead_s: float = 0.0  # fixed decode cost per token beside reading weights
    accelerator_note: str = ""
    aliases: tuple[str, ...] = ()
    speed_factors: tuple[tuple[str, float], ...] = ()  # type -> bandwidth relative to Q4_0
    references: tuple[ReferenceThroughput, ...] = ()
    notes: str = ""
    auto: bool = False  # values are placeholders filled by measuring the host (localhost)
    schema_version: int = SCHEMA_VERSION
    measured: MeasuredProfile | None = None

    def __post_init__(self) -> None:
        if self.ram_usable_bytes > self.ram_total_bytes:
            raise ConfigError(
                f"device {self.id}: ram_usable ({self.ram_usable_bytes}) exceeds "
                f"ram_total ({self.ram_total_bytes})"
            )
        if self.cores < 1 or self.threads < 1:
            raise ConfigError(f"device {self.id}: cores and threads must be >= 1")
        if not self.bandwidth_effective_bytes_per_s > 0:
            raise ConfigError(f"device {self.id}: bandwidth_effective must be > 0")

    def speed_factor(self, qtype: str) -> float | None:
        """This profile's override of a type's relative decode bandwidth, if it has one."""
        for name, factor in self.speed_factors:
            if name == qtype.upper():
                return factor
        return None

    def merged(self, measured: MeasuredProfile) -> DeviceProfile:
        """Overlay a measurement: measured host facts win over the static file.

        RAM usable becomes the RAM available when measured (what a model could really get);
        the effective bandwidth stays the static one until `budget.latency_model` refits it
        from `measured.type_speeds`.
        """
        return dataclasses.replace(
            self,
            arch=normalize_arch(measured.arch) or self.arch,
            cpu=measured.cpu or self.cpu,
            cores=measured.cores,
            threads=measured.cores if self.auto else min(self.threads, measured.cores),
            cpu_features=measured.cpu_features or self.cpu_features,
            ram_total_bytes=measured.ram_total_bytes,
            ram_usable_bytes=min(measured.ram_available_bytes, measured.ram_total_bytes),
            measured=measured,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["cpu_features"] = list(self.cpu_features)
        d["aliases"] = list(self.aliases)
        d["speed_factors"] = dict(self.speed_factors)
        d["references"] = [r.to_dict() for r in self.references]
        d["measured"] = None if self.measured is None else self.measured.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceProfile:
        kwargs = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kwargs["cpu_features"] = tuple(d.get("cpu_features", ()))
        kwargs["aliases"] = tuple(d.get("aliases", ()))
        kwargs["speed_factors"] = tuple(
            (str(k).upper(), float(v)) for k, v in dict(d.get("speed_factors", {})).items()
        )
        kwargs["references"] = tuple(
            ReferenceThroughput.from_dict(r) for r in d.get("references", ())
        )
        m = d.get("measured")
        kwargs["measured"] = None if m is None else MeasuredProfile.from_dict(m)
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# TOML loading


class _Fields:
    """Typed access to one TOML document; every error names the file and the field."""

    def __init__(self, doc: Mapping[str, Any], path: Path, prefix: str = ""):
        self.doc = doc
        self.path = path
        self.prefix = prefix
        self.used: set[str] = set()

    def _fail(self, key: str, want: str, value: Any) -> ConfigError:
        return ConfigError(
            f"{self.path.name}: field '{self.prefix}{key}' must be {want}, got {value!r}"
        )

    def get(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.doc:
            if default is ...:
                raise ConfigError(f"{self.path.name}: missing field '{self.prefix}{key}'")
            return default
        return self.doc[key]

    def string(self, key: str, default: Any = ..., choices: Sequence[str] = ()) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or (choices and value not in choices):
            want = f"one of {', '.join(choices)}" if choices else "a string"
            raise self._fail(key, want, value)
        return value

    def integer(self, key: str, default: Any = ..., minimum: int = 1) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}", value)
        return value

    def number(self, key: str, default: Any = ..., optional: bool = False) -> float | None:
        value = self.get(key, default)
        if optional and value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not value > 0
            or not math.isfinite(value)
        ):
            raise self._fail(key, "a positive, finite number", value)
        return float(value)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise self._fail(key, "a list of strings", value)
        return tuple(value)

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false", value)
        return value

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "a table", value)
        return value

    def check_unknown(self) -> None:
        unknown = sorted(set(self.doc) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.path.name}: unknown field '{self.prefix}{unknown[0]}'"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )


def _parse_reference(item: Any, path: Path, index: int) -> ReferenceThroughput:
    prefix = f"reference[{index}]."
    if not isinstance(item, dict):
        raise ConfigError(f"{path.name}: field 'reference[{index}]' must be a table")
    f = _Fields(item, path, prefix)
    size_gb = f.number("model_file_gb", None, optional=True)
    ref = ReferenceThroughput(
        model=f.string("model"),
        quant=f.string("quant"),
        engine=f.string("engine"),
        test=f.string("test"),
        tokens_per_s=f.number("tokens_per_s"),  # type: ignore[arg-type]
        source=f.string("source"),
        model_file_bytes=None if size_gb is None else round(size_gb * GB),
        note=f.string("note", ""),
    )
    f.check_unknown()
    return ref


def parse_profile(doc: Mapping[str, Any], path: Path) -> DeviceProfile:
    """Build a DeviceProfile from a parsed TOML document; errors name `path` and the field."""
    f = _Fields(doc, path)
    version = f.integer("schema_version", minimum=1)
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path.name}: schema_version {version} is newer than this ramp-edge supports "
            f"({SCHEMA_VERSION}); upgrade ramp-edge"
        )
    pid = f.string("id")
    if pid != path.stem:
        raise ConfigError(
            f"{path.name}: field 'id' must equal the file name {path.stem!r}, got {pid!r}"
        )
    arch = normalize_arch(f.string("arch"))
    if arch not in ARCHES:
        raise ConfigError(
            f"{path.name}: field 'arch' must be one of {', '.join(ARCHES)}, got {arch!r}"
        )
    cores = f.integer("cores")
    auto = f.boolean("auto", False)

    mem = _Fields(f.table("memory"), path, "memory.")
    total_gib = mem.number("ram_total_gib")
    usable_gib = mem.number("ram_usable_gib")
    peak = mem.number("bandwidth_peak_gb_s", None, optional=True)
    effective = mem.number("bandwidth_effective_gb_s")
    overhead_ms = mem.get("token_overhead_ms", 0.0)
    if isinstance(overhead_ms, bool) or not isinstance(overhead_ms, int | float) or overhead_ms < 0:
        raise ConfigError(
            f"{path.name}: field 'memory.token_overhead_ms' must be a number >= 0, "
            f"got {overhead_ms!r}"
        )
    bandwidth_note = mem.string("bandwidth_note", "")
    mem.check_unknown()
    assert total_gib is not None and usable_gib is not None and effective is not None
    if usable_gib > total_gib:
        raise ConfigError(
            f"{path.name}: field 'memory.ram_usable_gib' ({usable_gib}) exceeds "
            f"memory.ram_total_gib ({total_gib})"
        )

    factors_doc = f.table("speed_factors")
    factors: list[tuple[str, float]] = []
    sf = _Fields(factors_doc, path, "speed_factors.")
    for key in factors_doc:
        value = sf.number(key)
        assert value is not None
        factors.append((key.upper(), value))

    refs_doc = f.get("reference", [])
    if not isinstance(refs_doc, list):
        raise ConfigError(
            f"{path.name}: field 'reference' must be an array of tables ([[reference]])"
        )
    refs = tuple(_parse_reference(item, path, i) for i, item in enumerate(refs_doc))

    profile = DeviceProfile(
        id=pid,
        name=f.string("name"),
        arch=arch,
        cpu=f.string("cpu"),
        cores=cores,
        threads=f.integer("threads", cores),
        cpu_features=tuple(x.lower() for x in f.strings("cpu_features")),
        accelerator=f.string("accelerator"),
        accelerator_note=f.string("accelerator_note", ""),
        ram_total_bytes=round(total_gib * GIB),
        ram_usable_bytes=round(usable_gib * GIB),
        bandwidth_peak_bytes_per_s=None if peak is None else peak * GB,
        bandwidth_effective_bytes_per_s=effective * GB,
        bandwidth_note=bandwidth_note,
        token_overhead_s=float(overhead_ms) / 1000.0,
        aliases=f.strings("aliases", []),
        speed_factors=tuple(factors),
        references=refs,
        notes=f.string("notes", ""),
        auto=auto,
        schema_version=version,
    )
    f.check_unknown()
    return profile


def load_profile_file(path: str | Path) -> DeviceProfile:
    """Load one profile TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read device profile {path}: {err.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path.name}: invalid TOML ({err})") from None
    return parse_profile(doc, path)


@dataclass(frozen=True, slots=True)
class _Catalogue:
    profiles: dict[str, DeviceProfile] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def _catalogue(directory: Path | None = None) -> _Catalogue:
    directory = directory or profiles_dir()
    cat = _Catalogue()
    for path in sorted(directory.glob("*.toml")):
        try:
            profile = load_profile_file(path)
        except ConfigError as err:
            # one broken file must not hide every other device: skip it, say which and why
            logger.warning("skipping device profile %s: %s", path, err)
            continue
        if profile.id in cat.profiles:
            logger.warning("skipping device profile %s: id %r is defined twice", path, profile.id)
            continue
        cat.profiles[profile.id] = profile
    for profile in cat.profiles.values():
        for alias in profile.aliases:
            if alias in cat.profiles or alias in cat.aliases:
                other = cat.aliases.get(alias, alias)
                raise ConfigError(
                    f"{profile.id}.toml: alias {alias!r} is already used by {other!r}"
                )
            cat.aliases[alias] = profile.id
    return cat


def list_profiles(directory: Path | None = None) -> list[DeviceProfile]:
    """Every static profile, sorted by id."""
    return sorted(_catalogue(directory).profiles.values(), key=lambda p: p.id)


def resolve_name(name: str, directory: Path | None = None) -> str:
    """A profile id or alias -> the profile id; ConfigError listing the known ids otherwise."""
    cat = _catalogue(directory)
    key = name.strip().lower()
    if key in cat.profiles:
        return key
    if key in cat.aliases:
        return cat.aliases[key]
    import difflib

    known = ", ".join(sorted(cat.profiles))
    aliases = ", ".join(sorted(cat.aliases))
    close = difflib.get_close_matches(key, [*cat.profiles, *cat.aliases], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown device {name!r}{hint}; known: {known}; aliases: {aliases}")


def load_profile(
    name: str, measured: MeasuredProfile | None = None, directory: Path | None = None
) -> DeviceProfile:
    """Load a device profile by id or alias, overlaying `measured` when given."""
    pid = resolve_name(name, directory)
    profile = _catalogue(directory).profiles[pid]
    return profile.merged(measured) if measured is not None else profile
