"""Hardware specs: presets and their sources, derived figures, overrides, and the issue's acceptance checks
on the h200 preset (copy bandwidth, GEMM throughput, the per-SM in-flight limit)."""

from __future__ import annotations

import dataclasses

import pytest

import gpusim
from gpusim.errors import InputError
from gpusim.hardware import INSTRUCTION_CLASSES, PRESETS, HardwareSpec, field_unit, get_preset
from gpusim.problem import CopyProblem, GemmProblem

#: Fields every preset must cite a source for: the ones the timing model's answers depend on.
KEY_FIELDS = ("sm_count", "sm_clock_hz", "hbm_capacity_bytes", "hbm_bandwidth_bytes_per_s", "hbm_achievable_fraction",
              "hbm_latency_cycles", "l2_capacity_bytes", "l2_bandwidth_bytes_per_clk", "l2_hit_latency_cycles",
              "sm_max_inflight_bytes", "sm_load_bandwidth_bytes_per_clk", "smem_per_sm_bytes",
              "smem_per_cta_max_bytes", "smem_bandwidth_bytes_per_clk_per_sm", "tensor_sustained_fraction",
              "mufu_ops_per_clk_per_sm", "fp32_ops_per_clk_per_sm", "pcie_bandwidth_bytes_per_s")
#: Fields a preset with TMA must cite too.
TMA_FIELDS = ("has_tma", "tma_max_inflight_bytes", "tma_bandwidth_bytes_per_clk")
#: Fields a preset that gives cp.async its own path must cite too.
ASYNC_COPY_FIELDS = ("async_copy_max_inflight_bytes", "async_copy_bandwidth_bytes_per_clk",
                     "async_copy_hit_extra_latency_cycles", "async_copy_miss_extra_latency_cycles")


# ---------------------------------------------------------------------------------------------- presets
def test_presets_exist():
    assert {"a100", "h100", "h200", "b200"} <= set(PRESETS)
    for name in ("a100", "h100", "h200", "b200"):
        assert get_preset(name).name == name
    assert get_preset("H200") is get_preset("h200")


@pytest.mark.parametrize("name", ["a100", "a100-40gb", "h100", "h200", "b200"])
def test_presets_cite_a_source_for_key_fields(name):
    spec = get_preset(name)
    missing = [f for f in KEY_FIELDS if not spec.sources.get(f)]
    assert not missing, f"{name}: no source for {missing}"
    # every tensor-core rate the GPU has is cited too
    rates = [f"{i}_{kind}_flops_per_clk_per_sm" for i in INSTRUCTION_CLASSES for kind in ("bf16", "fp8")]
    missing = [f for f in rates if getattr(spec, f) and not spec.sources.get(f)]
    assert not missing, f"{name}: no source for {missing}"
    if spec.has_tma:
        missing = [f for f in TMA_FIELDS if not spec.sources.get(f)]
        assert not missing, f"{name}: no source for {missing}"
    if spec.async_copy_max_inflight_bytes:
        missing = [f for f in ASYNC_COPY_FIELDS if not spec.sources.get(f)]
        assert not missing, f"{name}: no source for {missing}"


@pytest.mark.parametrize("name, has_tma", [("a100", False), ("h100", True), ("h200", True), ("b200", True)])
def test_presets_with_tma_have_a_positive_tma_window_and_link(name, has_tma):
    spec = get_preset(name)
    assert spec.has_tma is has_tma
    if has_tma:
        assert spec.tma_max_inflight_bytes > 0 and spec.tma_bandwidth_bytes_per_clk > 0


def test_a100_40gb_is_the_a100_with_hbm2():
    """The FlashAttention paper's A100 40GB: the same die as the 80GB preset, 1555 GB/s HBM2 (datasheet)."""
    a100, a100_40 = get_preset("a100"), get_preset("a100-40gb")
    assert a100_40.hbm_bandwidth_bytes_per_s == 1.555e12 and a100_40.hbm_capacity_bytes == 40 * 10**9
    differing = {f.name for f in dataclasses.fields(HardwareSpec)
                 if f.name not in ("sources", "description") and getattr(a100, f.name) != getattr(a100_40, f.name)}
    assert differing == {"name", "hbm_bandwidth_bytes_per_s", "hbm_capacity_bytes"}
    assert "1,555 GB/s" in a100_40.sources["hbm_bandwidth_bytes_per_s"]
    # 1555 GB/s * 0.9 achievable / 1.41 GHz
    assert a100_40.hbm_bytes_per_clk == pytest.approx(1.555e12 * 0.9 / 1.41e9)


def test_h200_calibrated_values():
    # the values the copy_vs_sms and FA2 calibration settled on (gpusim/hardware.py cites them)
    h200 = get_preset("h200")
    assert h200.hbm_latency_cycles == 700
    assert h200.sm_max_inflight_bytes == 49152
    assert h200.sm_load_bandwidth_bytes_per_clk == 40.0
    assert h200.mma_sync_bf16_flops_per_clk_per_sm == 2731.0  # 4 x 4096 / 6: one HMMA per 6 cycles (ncu)
    assert (h200.mma_sync_sustained_fraction, h200.mma_sync_serial_operands) == (1.0, True)
    assert (h200.tma_max_inflight_bytes, h200.tma_bandwidth_bytes_per_clk) == (131072, 128.0)
    assert "copy_vs_sms" in h200.sources["hbm_latency_cycles"]
    assert "copy_vs_sms" in h200.sources["sm_load_bandwidth_bytes_per_clk"]


@pytest.mark.parametrize("name, instruction", [("a100", "mma_sync"), ("h100", "wgmma"), ("h200", "wgmma"),
                                               ("b200", "tcgen05")])
def test_best_instruction_is_the_newest_the_gpu_has(name, instruction):
    assert get_preset(name).best_instruction("bf16") == instruction


def test_unknown_preset_is_an_input_error_listing_the_known_ones():
    with pytest.raises(InputError, match=r"unknown hardware preset 'h300'.*a100, a100-40gb, b200, h100, h200"):
        get_preset("h300")


def test_specs_are_frozen_and_keyword_only():
    spec = get_preset("h200")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.sm_count = 1
    with pytest.raises(TypeError):
        HardwareSpec("x", "y")


# ---------------------------------------------------------------------------------------------- derived figures
def test_h200_hbm_bytes_per_clock():
    # 4.8 TB/s x 0.885 achievable / 1.98 GHz
    assert get_preset("h200").hbm_bytes_per_clk == pytest.approx(4.8e12 * 0.885 / 1.98e9, rel=1e-12)
    assert get_preset("h200").hbm_bytes_per_clk == pytest.approx(2145.45, abs=0.01)


def test_peak_tensor_flops_match_the_datasheets():
    assert get_preset("h100").peak_tensor_flops_per_s("bf16") == pytest.approx(989e12, rel=0.01)
    assert get_preset("h100").peak_tensor_flops_per_s("fp8") == pytest.approx(1979e12, rel=0.01)
    assert get_preset("a100").peak_tensor_flops_per_s("bf16") == pytest.approx(312e12, rel=0.01)
    assert get_preset("b200").peak_tensor_flops_per_s("bf16") == pytest.approx(2.25e15, rel=0.01)
    # mma.sync on Hopper: one HMMA.16816 (4096 FLOPs) per 6 cycles per sub-partition, 2731 FLOP/clk/SM (ncu)
    h100 = get_preset("h100")
    assert h100.peak_tensor_flops_per_s("bf16", "mma_sync") == pytest.approx(4 * 4096 / 6 * 132 * 1.83e9, rel=1e-3)


def test_tensor_rate_by_instruction_and_dtype():
    h200 = get_preset("h200")
    assert h200.tensor_flops_per_clk("wgmma", "bf16") == 4096
    assert h200.tensor_flops_per_clk("wgmma", "fp16") == 4096
    assert h200.tensor_flops_per_clk("wgmma", "fp8_e4m3") == 8192
    assert h200.tensor_flops_per_clk("mma_sync", "bf16") == 2731
    assert h200.tensor_flops_per_clk("tcgen05", "bf16") == 0  # Hopper has no tcgen05
    with pytest.raises(InputError, match="unknown tensor instruction class 'hmma'"):
        h200.tensor_flops_per_clk("hmma", "bf16")
    with pytest.raises(InputError, match="no tensor-core instruction for dtype fp8"):
        get_preset("a100").best_instruction("fp8")


def test_other_derived_rates():
    h200 = get_preset("h200")
    assert h200.seconds_per_cycle == 1 / 1.98e9
    assert h200.l2_bandwidth_bytes_per_s == 6144 * 1.98e9
    assert h200.smem_bandwidth_bytes_per_s == 128 * 132 * 1.98e9
    assert h200.peak_mufu_ops_per_s == 16 * 132 * 1.98e9


def test_field_units_come_from_field_names():
    assert field_unit("hbm_bandwidth_bytes_per_s") == "B/s"
    assert field_unit("l2_bandwidth_bytes_per_clk") == "B/clk"
    assert field_unit("smem_bandwidth_bytes_per_clk_per_sm") == "B/clk/SM"
    assert field_unit("wgmma_bf16_flops_per_clk_per_sm") == "FLOP/clk/SM"
    assert field_unit("hbm_latency_cycles") == "cycles"
    assert field_unit("sm_clock_hz") == "Hz"
    assert field_unit("smem_per_sm_bytes") == "B"


# ---------------------------------------------------------------------------------------------- overrides
def test_overrides_coerce_strings_to_the_field_types():
    spec = get_preset("h200").with_overrides({"smem_per_sm_bytes": "466944", "smem_per_cta_max_bytes": "465920",
                                              "has_tma": "false", "hbm_bandwidth_bytes_per_s": "9.6e12",
                                              "hbm_latency_cycles": "1e3"})
    assert spec.smem_per_sm_bytes == 466944 and type(spec.smem_per_sm_bytes) is int
    assert spec.smem_per_cta_max_bytes == 465920
    assert spec.has_tma is False
    assert spec.hbm_bandwidth_bytes_per_s == 9.6e12 and type(spec.hbm_bandwidth_bytes_per_s) is float
    assert spec.hbm_latency_cycles == 1000 and type(spec.hbm_latency_cycles) is int
    a100 = get_preset("a100").with_overrides({"has_tma": "true", "tma_max_inflight_bytes": "65536",
                                              "tma_bandwidth_bytes_per_clk": "64"})
    assert a100.has_tma is True
    assert a100.tma_max_inflight_bytes == 65536 and type(a100.tma_max_inflight_bytes) is int
    assert a100.tma_bandwidth_bytes_per_clk == 64.0 and type(a100.tma_bandwidth_bytes_per_clk) is float


@pytest.mark.parametrize("base, overrides", [
    ("a100", {"has_tma": "true"}),  # TMA switched on without a window or link
    ("h200", {"tma_max_inflight_bytes": "0"}),
    ("h200", {"tma_bandwidth_bytes_per_clk": "0"}),
])
def test_tma_needs_a_positive_window_and_link(base, overrides):
    with pytest.raises(InputError, match=r"tma_max_inflight_bytes and tma_bandwidth_bytes_per_clk: must be "
                                         r"positive when has_tma is true"):
        get_preset(base).with_overrides(overrides)


def test_tma_fields_are_checked_on_any_copy_of_a_spec():
    with pytest.raises(InputError, match="has_tma"):
        dataclasses.replace(get_preset("h200"), tma_max_inflight_bytes=0)


def test_a_gpu_without_tma_needs_no_tma_fields():
    spec = get_preset("h200").with_overrides({"has_tma": "false", "tma_max_inflight_bytes": "0",
                                              "tma_bandwidth_bytes_per_clk": "0"})
    assert spec.has_tma is False


def test_overrides_make_a_new_named_spec_and_record_their_source():
    base = get_preset("h200")
    spec = base.with_overrides({"l2_capacity_bytes": 2**27})
    assert spec.name == "h200*"
    assert spec.l2_capacity_bytes == 2**27
    assert spec.sources["l2_capacity_bytes"] == "override (--set)"
    assert base.l2_capacity_bytes == 30618419  # the preset itself is untouched
    assert base.with_overrides({"name": "h200x", "sm_count": 66}).name == "h200x"
    assert base.with_overrides({}) is base


def test_numbers_from_toml_are_coerced_too():
    spec = get_preset("h200").with_overrides({"hbm_bandwidth_bytes_per_s": 5, "sm_count": 64.0})
    assert spec.hbm_bandwidth_bytes_per_s == 5.0 and type(spec.hbm_bandwidth_bytes_per_s) is float
    assert spec.sm_count == 64 and type(spec.sm_count) is int


def test_unknown_override_field_suggests_the_nearest_name():
    hint = r"unknown hardware field 'smem_per_sm_byte' \(did you mean smem_per_sm_bytes\?\)"
    with pytest.raises(InputError, match=hint):
        get_preset("h200").with_overrides({"smem_per_sm_byte": "1"})
    with pytest.raises(InputError, match="unknown hardware field 'zzz'"):
        get_preset("h200").with_overrides({"zzz": "1"})


@pytest.mark.parametrize("field, value, reason", [
    ("hbm_bandwidth_bytes_per_s", "-1", "must not be negative"),
    ("hbm_latency_cycles", "-5", "must not be negative"),
    ("sm_count", "0", "must be positive"),
    ("sm_max_inflight_bytes", "0", "must be positive"),
    ("l2_bandwidth_bytes_per_clk", "0", "must be positive"),
    ("hbm_achievable_fraction", "1.5", r"must be in \(0, 1\]"),
    ("tensor_sustained_fraction", "0", r"must be in \(0, 1\]"),
    ("flushed_l2_dirty_fraction", "1.2", r"must be in \[0, 1\]"),
    ("flushed_l2_writeback_per_byte", "-0.1", "must not be negative"),
])
def test_impossible_override_values_name_the_field(field, value, reason):
    with pytest.raises(InputError, match=rf"{field}.*{reason}"):
        get_preset("h200").with_overrides({field: value})


@pytest.mark.parametrize("field, value, expected", [
    ("sm_count", "many", "cannot read 'many' as int"),
    ("sm_count", "1.5", "cannot read '1.5' as int"),
    ("has_tma", "maybe", "cannot read 'maybe' as bool"),
    ("hbm_bandwidth_bytes_per_s", "fast", "cannot read 'fast' as float"),
    ("has_tma", 3, "expected true or false"),
    ("sm_count", True, "expected a number"),
])
def test_unreadable_override_values_name_the_field(field, value, expected):
    with pytest.raises(InputError, match=rf"{field}: {expected}"):
        get_preset("h200").with_overrides({field: value})


def test_smem_per_cta_cannot_exceed_smem_per_sm():
    with pytest.raises(InputError, match="smem_per_cta_max_bytes"):
        get_preset("h200").with_overrides({"smem_per_sm_bytes": 65536})


def test_a_gpu_without_bf16_tensor_cores_is_rejected():
    with pytest.raises(InputError, match="no tensor-core instruction class has a bf16 rate"):
        get_preset("a100").with_overrides({"mma_sync_bf16_flops_per_clk_per_sm": 0})


def test_override_origin_appears_in_errors():
    with pytest.raises(InputError, match=r"^scen.toml: hardware.set: unknown hardware field"):
        get_preset("h200").with_overrides({"bogus": 1}, origin="scen.toml: hardware.set")
    with pytest.raises(InputError, match=r"^scen.toml: hardware.set: hardware field sm_count=0: must be positive"):
        get_preset("h200").with_overrides({"sm_count": 0}, origin="scen.toml: hardware.set")


# ---------------------------------------------------------------------------------------------- acceptance (issue 2)
def test_h200_copy_reaches_the_measured_bandwidth():
    # measured: 4.25 TB/s read + write for a 2 GiB device-to-device copy (h200_calibration.json)
    problem = CopyProblem(bytes=2**31)
    result = gpusim.simulate("copy", problem, "h200")
    assert 2 * problem.bytes / result.time_s == pytest.approx(4.25e12, rel=0.10)
    assert result.hbm_bytes_per_s == pytest.approx(4.25e12, rel=0.10)
    assert result.hbm_read_bytes >= problem.bytes
    assert result.bound == "memory"


def test_h200_gemm_reaches_the_measured_throughput():
    # measured: cuBLAS 8192^3 bf16 at 690-790 TFLOP/s; 740 is the band's middle
    result = gpusim.simulate("gemm", GemmProblem(m=8192, n=8192, k=8192), "h200")
    assert result.tflops_per_s * 1e12 == pytest.approx(740e12, rel=0.10)
    assert result.flops == 2 * 8192**3
    assert result.bound == "compute"


def per_sm_read_limit(hw, chunk_bytes: int) -> float:
    """Bytes per cycle one SM's load/store path can read: its link, and Little's law over its in-flight
    window, where each chunk stays in flight for the latency plus its own drain through the link."""
    link = hw.sm_load_bandwidth_bytes_per_clk
    return min(link, hw.sm_max_inflight_bytes / (hw.hbm_latency_cycles + chunk_bytes / link))


def test_h200_copy_on_8_sms_is_held_back_by_the_per_sm_path():
    # the copy reads through the SMs' load/store units (and writes as much again). On the h200 preset each SM's
    # 40 B/clk link binds (49152 / (700 + 16384 / 40) = 44.3 B/clk from the window is looser): 8 SMs read at
    # most 320 B/clk = 0.63 TB/s, 1.27 TB/s read + write, far below the all-SM bandwidth
    h200 = get_preset("h200")
    problem = CopyProblem(bytes=2**31)
    full = gpusim.simulate("copy", problem, h200)
    few = gpusim.simulate("copy", CopyProblem(bytes=2**31, sms=8), h200)
    chunk = few.info["chunk_bytes"]
    assert chunk == 16384
    assert per_sm_read_limit(h200, chunk) == 40.0
    bandwidth = 2 * problem.bytes / few.time_s
    limit = 8 * per_sm_read_limit(h200, chunk) * h200.sm_clock_hz * 2
    assert bandwidth <= limit * (1 + 1e-9)
    assert bandwidth > 0.98 * limit  # held back by the per-SM path, not by something else
    assert bandwidth < 0.6 * 2 * problem.bytes / full.time_s
    assert few.info["sms"] == 8


def test_h200_copy_on_8_sms_with_a_one_chunk_window_is_held_back_by_littles_law():
    # a 16384-byte window keeps one chunk in flight: 16384 B per 700 + 16384 / 40 = 1109.6-cycle round trip,
    # 14.8 B/clk per SM, well below the 40 B/clk link
    h200 = get_preset("h200").with_overrides({"sm_max_inflight_bytes": 16384})
    problem = CopyProblem(bytes=2**27, sms=8)
    few = gpusim.simulate("copy", problem, h200)
    assert per_sm_read_limit(h200, 16384) == pytest.approx(16384 / 1109.6)
    bandwidth = 2 * problem.bytes / few.time_s
    limit = 8 * per_sm_read_limit(h200, 16384) * h200.sm_clock_hz * 2
    assert 0.98 * limit < bandwidth <= limit * (1 + 1e-9)


def test_warp_schedulers_are_a_positive_whole_number():
    h200 = get_preset("h200")
    assert h200.warp_schedulers_per_sm == 4
    with pytest.raises(InputError, match="warp_schedulers_per_sm=2.5: must be a whole number"):
        dataclasses.replace(h200, warp_schedulers_per_sm=2.5)
    with pytest.raises(InputError, match="warp_schedulers_per_sm=0: must be positive"):
        dataclasses.replace(h200, warp_schedulers_per_sm=0)
