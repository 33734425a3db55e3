"""`[serving]` scenarios: a TOML file that runs one serving study (gpusim.serving.studies) and writes its
tables and figures, all or nothing, like `gpusim run` of a kernel scenario.

    name = "serving_paging"
    description = "..."
    output_dir = "results/serving_paging"   # optional
    [hardware]                              # optional: preset and overrides, as in kernel scenarios
    preset = "h200"
    [serving]
    study = "paging"                        # paging | kv_quant | chunked_prefill | kv_memory | offload | tp
    model = "llama3-8b"
    block_sizes = [8, 16, 32, 64, 128, 256] # the study's parameters (STUDY_KEYS); omitted ones take defaults

Every key is checked against the study's list and its type; an unknown key or a bad value is an InputError
naming the file and the key. The study itself is the function the matching CLI command calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec

TOP_KEYS = {"name", "description", "output_dir", "hardware", "serving"}
INT, FLOAT, STR, BOOL = "a whole number", "a number", "a string", "true or false"
INTS, FLOATS, STRS = "a list of whole numbers", "a list of numbers", "a list of strings"
TRACE_KEYS = {"requests": INT, "mean_prompt": FLOAT, "mean_output": FLOAT, "sigma": FLOAT, "max_seq_len": INT,
              "seed": INT}
SERVE_KEYS = {"model": STR, "rate_per_s": FLOAT, "chunk_size": INT, "max_seqs": INT, "max_batch_tokens": INT,
              "kv_memory_fraction": FLOAT, **TRACE_KEYS}
STUDY_KEYS = {
    "paging": {"model": STR, "block_sizes": INTS, "batch": INT, "kv_len": INT, "tile": STR, "budget_gib": FLOAT,
               **TRACE_KEYS},
    "kv_quant": {"model": STR, "kv_len": INT, "batch": INT, "dtypes": STRS, "scale": STR, "group_size": INT,
                 "error_kv_len": INT},
    "chunked_prefill": {**SERVE_KEYS, "kv_dtype": STR, "block_size": INT},
    "kv_memory": {**SERVE_KEYS, "kv_dtypes": STRS, "block_sizes": INTS},
    "offload": {"model": STR, "batch": INT, "seq_len": INT, "fractions": FLOATS, "keep": FLOATS},
    "tp": {"model": STR, "batch": INT, "seq_len": INT, "degrees": INTS, "replicate": BOOL},
}


@dataclass(frozen=True)
class StudyPoint:
    """The one study call a serving scenario makes."""

    study: str
    params: dict
    hardware: HardwareSpec


@dataclass
class ServingScenario:
    path: Path
    name: str
    description: str
    output_dir: Path
    point: StudyPoint

    @property
    def points(self) -> list[StudyPoint]:
        """Like a kernel scenario's points: what it runs (here one study)."""
        return [self.point]


def _type_ok(value, kind: str) -> bool:
    scalar = {INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
              FLOAT: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              STR: lambda v: isinstance(v, str), BOOL: lambda v: isinstance(v, bool)}
    if kind in (INTS, FLOATS, STRS):
        item = {INTS: INT, FLOATS: FLOAT, STRS: STR}[kind]
        return isinstance(value, list) and bool(value) and all(scalar[item](v) for v in value)
    return scalar[kind](value)


def check_params(path: Path, table: dict) -> tuple[str, dict]:
    """(study, parameters) of a [serving] table, every key known to its study and of the right type."""
    if not isinstance(table, dict):
        raise InputError(f"{path}: serving must be a table")
    study = table.get("study")
    if study not in STUDY_KEYS:
        raise InputError(f"{path}: serving.study={study!r}: known {', '.join(STUDY_KEYS)}")
    allowed = STUDY_KEYS[study]
    params = {}
    for key, value in table.items():
        if key == "study":
            continue
        if key not in allowed:
            raise InputError(f"{path}: unknown key serving.{key} for study {study} "
                             f"(known: {', '.join(sorted(allowed))})")
        if not _type_ok(value, allowed[key]):
            raise InputError(f"{path}: serving.{key}={value!r} must be {allowed[key]}")
        params[key] = value
    if "model" in params:
        from gpusim.serving.models import get_model
        try:
            get_model(params["model"])
        except InputError as exc:
            raise InputError(f"{path}: serving.model: {exc}") from None
    return study, params


def load_serving_scenario(path: Path, data: dict, hardware: HardwareSpec) -> ServingScenario:
    from gpusim.scenario import _check_keys

    _check_keys(path, "", data, TOP_KEYS)
    study, params = check_params(path, data["serving"])
    name = str(data.get("name", path.stem))
    return ServingScenario(path=path, name=name, description=str(data.get("description", "")),
                           output_dir=Path(data.get("output_dir", Path("results") / name)),
                           point=StudyPoint(study=study, params=params, hardware=hardware))


def _pick(params: dict, keys) -> dict:
    return {k: params[k] for k in keys if k in params}


def _trace(params: dict, **defaults):
    from gpusim.serving.allocator import TraceSpec

    return TraceSpec(**{**defaults, **_pick(params, TRACE_KEYS)})


def _serving_config(params: dict, hardware: HardwareSpec, **memory):
    from gpusim.serving.serving_sim import ServingConfig

    return ServingConfig(hardware=hardware, trace=_trace(params, requests=200),
                         **_pick(params, ("model", "rate_per_s", "max_seqs", "max_batch_tokens",
                                          "kv_memory_fraction")), **memory)


def run_study(point: StudyPoint):
    """The StudyOutput of `point`: its parameters passed to the study function the CLI command calls."""
    from gpusim.serving import studies

    p, hw = point.params, point.hardware
    if point.study == "paging":
        budget = int(p["budget_gib"] * 2**30) if "budget_gib" in p else None
        return studies.paging_study(p.get("model", "llama3-8b"), hw, trace=_trace(p), budget_bytes=budget,
                                    **_pick(p, ("block_sizes", "batch", "kv_len", "tile")))
    if point.study == "kv_quant":
        return studies.kv_quant_study(p.get("model", "llama3-8b"), hw,
                                      **_pick(p, ("kv_len", "batch", "dtypes", "scale", "group_size", "error_kv_len")))
    if point.study == "chunked_prefill":
        config = _serving_config(p, hw, **_pick(p, ("kv_dtype", "block_size")))
        return studies.serving_study(config, memories=studies.serve_memories(config),
                                     chunk_sizes=(None, p.get("chunk_size", 512)))
    if point.study == "kv_memory":
        config = _serving_config(p, hw)
        memories = [(d, b) for d in p.get("kv_dtypes", ["bf16"]) for b in p.get("block_sizes", [0, 16])]
        chunk = p.get("chunk_size", 512) or None
        return studies.serving_study(config, memories=memories, chunk_sizes=(chunk,), study="kv_memory")
    if point.study == "offload":
        return studies.offload_study(p.get("model", "llama3-8b"), hw,
                                     **_pick(p, ("batch", "seq_len", "fractions", "keep")))
    return studies.tp_study(p.get("model", "llama3-70b"), hw, **_pick(p, ("batch", "seq_len", "degrees", "replicate")))


def run_serving_scenario(scenario: ServingScenario) -> int:
    """Run the study, write summary.json, its CSVs and figures into the output folder (all or nothing), print
    its table. A study that rejects a value raises an InputError naming the file, before anything is written."""
    from gpusim.serving.cli import print_study, write_study

    try:
        output = run_study(scenario.point)
    except InputError as exc:
        raise InputError(f"{scenario.path}: serving ({scenario.point.study}): {exc}") from None
    _, wrote = write_study(scenario.output_dir, output, f"{scenario.path}: serving")
    print_study(output)
    print(wrote)
    return 0
