"""cuDNN's fused attention (SDPA's CUDNN backend on Hopper) as options of the `fa3` kernel: its tiles and the extra
instructions it issues, each measured on the H200 (ncu; validation/README.md). The validation cases
(validation/build_cases.py), the tests and the benchmarks run cuDNN as these; a script can too:
`simulate("fa3", problem, "h200", {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA})`. Read-only mappings.
"""

from __future__ import annotations

from types import MappingProxyType

#: cuDNN's Hopper forward (validation/README.md run 9, ncu): 384 threads (a producer and two consumer warpgroups
#: of 64 x 128 tiles, as its name ..._64x128x{d}_4x1x1 reads) and 8 CTAs per head at N = 1024: 128 query rows
#: per tile for d = 64 and 128, where FA3's own kernel takes 192 rows at d = 64.
CUDNN_FPROP_TILES = MappingProxyType({"block_m": 128, "block_n": 128})
#: cuDNN's forward issues more instructions in its consumer warpgroups' softmax than its arithmetic (ncu,
#: validation/README.md run 20, N = 8192): 7.15 / 8.16 non-MUFU lanes per score element at d = 64 / 128, where the
#: online softmax counts 4.5 / 5.0 (4 per score element and 1 per accumulator element), so 2.14 more per score
#: element and 1.02 per accumulator element (fitted at d = 64 and 128; run 24 checks them at d = 256).
CUDNN_FPROP_SOFTMAX_EXTRA = MappingProxyType({"extra_softmax_ops_per_score": 2.14, "extra_softmax_ops_per_acc": 1.02})
#: cuDNN's forward at d = 256 (ncu, validation/README.md run 24): the same kernel family, ..._64x128x256_4x1x1, with
#: 232,448 bytes of SMEM per CTA: a 128-row Q tile (64 KiB) and one 128-key K and V tile each (64 KiB each), a
#: one-deep ring. Its softmax issues 9.87 non-MUFU lanes per score element at N = 8192, where the two counts above
#: give 10.18 (6.0 counted + 2.14 + 2 x 1.02).
CUDNN_FPROP_D256 = MappingProxyType({**CUDNN_FPROP_TILES, "stages": 1})
#: cuDNN's Hopper backward (validation/README.md runs 12, 39, 40; ncu):
#: `..._flash_bprop_wgmma_f16_knob_26_64x64x{d}_1x4x1`, 384 threads: a producer and two consumer warpgroups of 64
#: keys each, so a CTA walks 128 keys in steps of 64 query rows (run 39: 132 tiles of 64 keys ran on 66 CTAs), at
#: d = 64 and 128, where FA3's own backward takes 128 x 128 (d = 64) and 64 x 128 (d = 128). Its CTA issues 13.8 /
#: 17.1 FP32-pipe lanes (ncu's `alu` plus `fma`) per score element at d = 64 / 128 (run 40, N = 8192), where the
#: model's exp and dS count 3: the rest is 7.51 per score element and 6.63 per element of the step's 64 x d dQ
#: tile (the two head dims solved together).
CUDNN_BPROP_TILES = MappingProxyType({"bwd_block_m": 64, "bwd_block_n": 128, "extra_bwd_ops_per_score": 7.51,
                                      "extra_bwd_ops_per_dq": 6.63})
