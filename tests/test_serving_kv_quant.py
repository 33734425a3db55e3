"""KV-cache quantization: round trips, error ordering by bits, the kernel's quantized path reads fewer bytes."""

import numpy as np
import pytest

from gpusim.errors import InputError
from gpusim.problem import AttentionProblem
from gpusim.simulate import simulate
from gpusim.serving.kv_quant import (dequantize, kernel_quantization_error, quantization_error, quantization_table,
                                     quantize)

PROBLEM = AttentionProblem(batch=2, heads=8, kv_heads=2, seq_len=1, kv_len=128, head_dim=64)


def test_int8_block_round_trip_is_exact_on_the_grid():
    x = np.array([[1.0, -2.0, 0.5, 127.0 / 64]], dtype=np.float32)
    codes, scales = quantize(x, "int8", scheme="block", group_size=4)
    assert scales.shape == (1, 1)
    assert scales[0, 0] == pytest.approx(2.0 / 127, rel=1e-3)   # amax / 127, fp16-rounded
    assert codes.max() <= 127 and codes.min() >= -127
    assert np.allclose(dequantize(codes, scales), x, atol=scales[0, 0] / 2 + 1e-6)


def test_scale_shapes():
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 64)).astype(np.float32)
    assert quantize(x, "int4", scheme="block", group_size=32)[1].shape == (2, 3, 16, 2)
    assert quantize(x, "int4", scheme="channel")[1].shape == (2, 3, 1, 64)
    assert quantize(x, "fp8_e4m3", scheme="tensor")[1].shape == (1,)
    with pytest.raises(InputError):
        quantize(x, "int4", scheme="block", group_size=48)
    with pytest.raises(InputError):
        quantize(x, "int2")


def test_more_bits_less_error_and_fp8_beats_int4():
    err = {(r.dtype, r.scheme): r.output_relative_error for r in quantization_table(PROBLEM)}
    assert err[("bf16", "none")] < err[("int8", "block")] < err[("int4", "block")]
    assert err[("fp8_e4m3", "block")] < err[("int4", "block")]
    assert err[("fp8_e4m3", "tensor")] < err[("fp8_e5m2", "tensor")]  # 3 mantissa bits beat 2
    assert err[("int4", "block")] < err[("int4", "tensor")]            # finer scales, less error
    assert err[("int8", "block")] < 0.02 and err[("int4", "block")] < 0.3


def test_per_channel_scales_handle_key_outlier_channels():
    tensor = quantization_error(PROBLEM, "int4", scheme="tensor", key_outlier_scale=10.0)
    channel = quantization_error(PROBLEM, "int4", scheme="channel", key_outlier_scale=10.0)
    assert channel.output_relative_error < 0.5 * tensor.output_relative_error


def test_bytes_read_follow_kv_cache_formulas():
    bf16 = quantization_error(PROBLEM, "bf16")
    int4 = quantization_error(PROBLEM, "int4", scheme="block", group_size=32)
    assert bf16.kv_bytes_per_token_per_layer == 2 * 2 * 64 * 2
    assert int4.kv_bytes_per_token_per_layer == 2 * 2 * (32 + 2 * 2)
    assert bf16.kv_bytes_read == 2 * 128 * bf16.kv_bytes_per_token_per_layer


@pytest.mark.parametrize("dtype,tol", [("fp8_e4m3", 0.06), ("fp8_e5m2", 0.12), ("int8", 0.02), ("int4", 0.25)])
def test_kernel_quantized_path_matches_numpy_error(dtype, tol):
    """The functional interpreter runs the kernel's dequantization; its error is the format's, not more."""
    kernel = kernel_quantization_error(PROBLEM, dtype, options=dict(block_size=32, page_table_seed=4, num_splits=2))
    numpy = quantization_error(PROBLEM, dtype, scheme="block").output_relative_error
    assert kernel < tol
    assert kernel == pytest.approx(numpy, rel=0.35, abs=0.01)


def test_quantized_kernel_reads_fewer_bytes_and_pays_dequantization():
    problem = AttentionProblem(batch=4, heads=32, kv_heads=8, seq_len=1, kv_len=1024, head_dim=128)
    base = simulate("paged_decoding", problem, "h200", dict(page_table_seed=1))
    fp8 = simulate("paged_decoding", problem, "h200", dict(page_table_seed=1, kv_dtype="fp8_e4m3"))
    int4 = simulate("paged_decoding", problem, "h200", dict(page_table_seed=1, kv_dtype="int4", kv_group=32))
    kv16 = 2 * 4 * 8 * 1024 * 128 * 2
    assert base.l2_read_bytes > kv16
    # fp8: half the K/V bytes plus one fp16 scale per token and head (K and V)
    assert fp8.l2_read_bytes - base.l2_read_bytes == pytest.approx(-kv16 / 2 + 2 * 4 * 8 * 1024 * 2, rel=1e-6)
    assert int4.l2_read_bytes < fp8.l2_read_bytes
    assert fp8.unit_busy["fp32"] > base.unit_busy["fp32"]
    assert fp8.time_s < base.time_s
