#!/usr/bin/env bash
# The GPU checks, in one call: run from the repository root on a machine with a CUDA device.
#
#   bash scripts/device_check.sh            # tests, then the CUDA benchmark subset
#   TSGU_DEVICE_STEPS=tests bash scripts/device_check.sh
#
# The packages are used from their source folders (PYTHONPATH), so nothing is installed: the machine
# needs torch with CUDA, pytest and hypothesis (CuPy and JAX for the bridge checks, SciPy for the
# references of the bridge tests).  Logs and the benchmark tables go to $OUT (default /tmp/tsgu-device).
set -uo pipefail
OUT=${OUT:-/tmp/tsgu-device}
STEPS=${TSGU_DEVICE_STEPS:-tests,bench}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
PYTHONPATH=$(printf '%s:' "$PWD"/packages/*/src)$PWD
export PYTHONPATH PYTHONUNBUFFERED=1 TSGU_HYPOTHESIS_PROFILE=dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
    2>&1 | tee -a "$OUT/gpu.txt"
rc=0
if [[ $STEPS == *tests* ]]; then
    # every package on the device (tests-integration/test_cuda.py) and the bridges' CuPy tests
    timeout "${TSGU_TEST_TIMEOUT:-330}" $PY -m pytest -q -p no:cacheprovider -rs -o addopts="--import-mode=importlib" \
        tests-integration/test_cuda.py packages/tsgu-bridges/tests/test_bridges.py -k "cuda or cupy" \
        2>&1 | tee "$OUT/tests.log" | tail -60
    rc=${PIPESTATUS[0]}
fi
if [[ $STEPS == *bench* ]]; then
    # the cases that need no CPU-only peer (torch-sla) or corpus package (pyamg), on the device
    timeout "${TSGU_BENCH_TIMEOUT:-300}" $PY -m benchmarks --device cuda --budget 1 --repeats 3 --out /tmp/tsgu-bench \
        --only sparse_mm_csr --only sparse_mm_batched --only triangular_solve --only gather_mm \
        --only segment_mm --only krylov_poisson --only scipy_direct --only smvn_log_prob \
        --only encoder_large --only sparse_parameter_step \
        >"$OUT/bench.log" 2>&1
    echo "benchmarks exit: $?"
    cp /tmp/tsgu-bench/summary.md /tmp/tsgu-bench/results.csv /tmp/tsgu-bench/rows.jsonl "$OUT/" 2>/dev/null
    cat /tmp/tsgu-bench/summary.md 2>/dev/null | cut -c1-220
fi
if [[ $STEPS == *capture* || $STEPS == *tests* ]]; then
    # CUDA-graph capture of the CG device loop (not yet run on a GPU): Poisson 40³, float64, 8 columns
    timeout "${TSGU_CAPTURE_TIMEOUT:-120}" $PY -m pytest -q -p no:cacheprovider packages/tsgu-krylov/tests/test_capture.py \
        2>&1 | tee "$OUT/capture_tests.log" | tail -5
    timeout "${TSGU_CAPTURE_TIMEOUT:-120}" $PY - <<'PYEOF' 2>&1 | tee "$OUT/capture_timing.txt"
import time, warnings, torch
from tsgu_krylov import linear_cg
from tsgu_ops.testing import grid_operator
A = grid_operator((40, 40, 40)).to_sparse_csr().cuda()
for k in (1, 8):
    B = torch.randn(A.shape[0], k, dtype=torch.float64, device="cuda")
    out = {}
    for capture in (False, True):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            linear_cg(A, B, rtol=1e-8, loop="device", capture=capture, return_info=True)  # warm-up
            torch.cuda.synchronize(); t = time.perf_counter()
            x, info = linear_cg(A, B, rtol=1e-8, loop="device", capture=capture, return_info=True)
            torch.cuda.synchronize(); dt = time.perf_counter() - t
        out[capture] = x
        print(f"CG k={k} capture={capture}: {dt*1e3:.1f} ms, {info.iterations} it, "
              f"{dt/max(info.iterations,1)*1e6:.1f} us/it, warnings: {[str(m.message)[:80] for m in w]}")
    print(f"  max |x_captured - x_uncaptured| = {float((out[True] - out[False]).abs().max()):.2e}")
PYEOF
fi
exit "$rc"
