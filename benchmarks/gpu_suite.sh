#!/usr/bin/env bash
# The GPU side of benchmarks/results in one script: the test suite on CUDA,
# the speed table and the lfm2k accuracy tables, on the first CUDA device.
#
#   bash benchmarks/gpu_suite.sh STAGE OUT [DATA]
#
# STAGE  core | tests | speed | accuracy-paper | accuracy-more | all
#          core: the CUDA-marked tests, then speed (even if a test
#            fails), in one command capped at 150 + 420 s; tests: the
#            whole suite; accuracy-paper: the models of the paper's
#            table (MostPop, LightGCN, VBPR, FREEDOM, DRAGON, BM3, SAND,
#            MDE) and MDE's ablations; accuracy-more: MMGCN, GRCN,
#            DualGNN, SLMRec, LGMRec and GRCN's MMRec routing.
# OUT    a folder for the result files (created; a log per stage beside
#        each table).
# DATA   the folder holding lfm2k/ and baby_graph/ (default: ../shared/data
#        beside the project root; see that folder's README).
#
# Each stage but "all" ends within 10 minutes on one GPU with 16 CPU cores
# (every command is capped by `timeout`), so that each fits one command on
# a machine with a per-command limit; with 15 minutes of device time in a
# session, run "core" first. Needs python3 with a CUDA build of torch,
# torch_geometric, numpy, scipy and scikit-learn, and for the tests
# pytest, hypothesis, pyyaml and matplotlib (it names any that are
# missing before it starts); runs from the source tree when mde_pyg is
# not installed. ../shared does not travel to a lent machine: copy lfm2k/
# and baby_graph/ into a folder that git ignores (.gpudata/, 9 MiB), carry
# it, and pass it as DATA. Copy the result files into benchmarks/results/
# and quote them in the README's Performance and Results sections.
set -euo pipefail

usage() {
    sed -n '4,18s/^# \{0,1\}//p' "$0" >&2
    exit 2
}
[ $# -ge 2 ] || usage
stage=$1
case $stage in
    core | tests | speed | accuracy-paper | accuracy-more | all) ;;
    *) usage ;;
esac
out=$(mkdir -p "$2" && cd "$2" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
data=${3:-$root/../shared/data}
cd "$root"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
jobs=${JOBS:-12}  # concurrent training runs of the accuracy stages

need() {
    if [ ! -d "$1" ]; then
        echo "gpu_suite.sh: no folder $1; pass the data folder as the third" \
             "argument (it must hold lfm2k/ and baby_graph/)" >&2
        exit 2
    fi
}

preflight() {  # the modules a stage imports, by their import names
    python3 - "$@" <<'PY'
import importlib.util
import sys


def present(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # e.g. sys.modules[name] is None
        return False


missing = [name for name in sys.argv[1:] if not present(name)]
if missing:
    sys.exit(f"gpu_suite.sh: python3 lacks {', '.join(missing)}; install "
             f"them, or carry their wheels to a machine without a registry")
PY
}
runtime="torch_geometric numpy scipy sklearn"
testing="pytest hypothesis yaml matplotlib"
case $stage in
    tests | core | all) preflight $runtime $testing ;;
    *) preflight $runtime ;;
esac
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else
    'gpu_suite.sh: torch sees no CUDA device; run it on a GPU machine')"

run_tests() {  # timeout, then pytest's selection
    local limit=$1
    shift
    # the tests that read ../shared/data find it only there
    timeout "$limit" python3 -m pytest -q -p no:cacheprovider "$@" tests \
        2>&1 | tee "$out/pytest_cuda.txt"
}

run_speed() {
    need "$data/baby_graph"
    timeout "${1:-570}" python3 benchmarks/speed.py --device cuda --epochs 2 \
        --data "$data/baby_graph" --output "$out/speed_cuda_fp32.md" \
        2>&1 | tee "$out/speed_cuda_fp32.log"
}

run_accuracy() {  # name, then accuracy.py's --models and --variants
    need "$data/lfm2k"
    local name=$1
    shift
    timeout 570 python3 benchmarks/accuracy.py --data "$data/lfm2k" \
        --modality text=all-MiniLM-L6-v2.npy --modality audio=vggish.npy \
        --seeds 0 1 2 --device cuda --jobs "$jobs" --threads 1 \
        --max-epochs 400 --work "/tmp/mde_pyg_$name" \
        --output "$out/$name.md" "$@" > "$out/$name.log" 2>&1
    tail -n 3 "$out/$name.log"
}

paper() {
    run_accuracy accuracy_lfm2k_cuda --models mostpop lightgcn vbpr \
        freedom dragon bm3 sand mde --variants mde
}

more() {
    run_accuracy accuracy_lfm2k_more_cuda --models mmgcn grcn dualgnn \
        slmrec lgmrec --variants grcn
}

case $stage in
    core)
        need "$data/baby_graph"  # before the tests, not after
        failed=0
        run_tests 150 -m cuda || failed=$?
        run_speed 420
        exit "$failed"
        ;;
    tests) run_tests 540 ;;
    speed) run_speed ;;
    accuracy-paper) paper ;;
    accuracy-more) more ;;
    all) run_tests 540; run_speed; paper; more ;;
esac
