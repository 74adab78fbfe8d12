#!/usr/bin/env bash
# The GPU checks of issue 4, for a session that is lent a device (15 minutes of device time in all,
# 10 minutes a command; a machine stays warm 30 s after a call, keeping the files it wrote).
#
#     bash benchmarks/gpu_check.sh fetch    # here, on a machine with pip's registry: the wheels the GPU
#                                           # image lacks (gymnasium, minigrid, SB3, ...) into .whl/
#     bash benchmarks/gpu_check.sh          # on the GPU (carry .whl; timeout_s 600): CPU/GPU agreement and the
#                                           # captured rollout (tests/test_cuda.py), then the 15-minute target:
#                                           # the 5-run reproduction (--batched, captured rollout) until the call
#                                           # has run ${BUDGET:-560} s, when it saves a checkpoint (SIGTERM) and stops
#     bash benchmarks/gpu_check.sh target   # right after (the machine still warm): continues the reproduction
#                                           # from its checkpoint, again up to BUDGET s; again until done
#     bash benchmarks/gpu_check.sh bench    # the captured rollout's speed against eager, and one seed alone
#
# The reproduction's run directories stay on the machine (runs/gpu_check/); what comes back is at most
# 8 files under $OUT (gpu.txt, test_cuda.txt, target.txt, the reproduction's JSON, bench.txt). Its
# training time summed over the pieces is each row's train_seconds in the JSON; target.txt has the
# progress lines (episodes/s) and, once done, the table.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
if [ "$mode" = fetch ]; then  # the GPU image's python is 3.12 with torch; nothing can be fetched there
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        gymnasium==1.4.0 farama-notifications==0.0.6 minigrid==3.2.0 pygame-ce==2.5.8 stable-baselines3==2.9.2
    ls .whl
    exit
fi
case "$mode" in all|target|bench) ;; *) echo "usage: $0 [fetch|target|bench]" >&2; exit 2 ;; esac
if [ -d .whl ] && ! python3 -c "import gymnasium" 2>/dev/null; then
    [ -d /tmp/site/gymnasium ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site
fi
# modrl.envs / modrl.agents live in envs/ and agents/ (an editable install maps them); where pip cannot
# install, links in this copy of the tree do the same
python3 -c "import modrl.envs" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || { ln -sfn ../envs modrl/envs; ln -sfn ../agents modrl/agents; }
python3 -c "import modrl.envs, modrl.agents" || exit
export PYTHONUNBUFFERED=1
out="${OUT:-gpu_check}"
mkdir -p "$out"
device="${DEVICE:-cuda}" graph="${GRAPH:-cuda}"  # DEVICE=cpu GRAPH=eager BUDGET=90: a dry run of the script's flow anywhere

reproduce() {  # the 15-minute target's run, stopped by SIGTERM with a checkpoint 30 s before the call's BUDGET
    local limit=$(( ${BUDGET:-560} - SECONDS - 30 ))
    echo "== the 5-run reproduction (--batched, captured rollout), until done or ${limit} s"
    timeout -s TERM "$limit" python3 -m modrl.experiments.sketch_reproduction --batched --seeds 1 2 3 4 5 --parallel 5 \
        --progress-every 30 --run-root runs/gpu_check --out "$out" --set device="$device" agent.rollout_graph="$graph" 2>&1 \
        | grep -v "^modrl: \(run directory\|TensorBoard\)" | tee -a "$out/target.txt"
    local rc="${PIPESTATUS[0]}"
    case "$rc" in
        0) echo "== done: the table above; train_seconds per run in $out/craft_sketch_batched_reproduction.json" \
               | tee -a "$out/target.txt" ;;
        124|143) echo "== not finished: run 'bash benchmarks/gpu_check.sh target' again to continue" | tee -a "$out/target.txt" ;;
        *) echo "== failed (exit $rc)" | tee -a "$out/target.txt" ;;
    esac
}

case "$mode" in
all)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
    echo "== tests/test_cuda.py"
    timeout 150 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -30 | tee "$out/test_cuda.txt"
    reproduce
    ;;
target)
    reproduce
    ;;
bench)
    echo "== benchmarks/rollout_graph.py" | tee "$out/bench.txt"
    timeout 150 python3 benchmarks/rollout_graph.py --num-envs 512 4096 --updates 20 2>&1 | tee -a "$out/bench.txt"
    echo "== one seed of craft_sketch.yaml with the captured rollout, 90 s" | tee -a "$out/bench.txt"
    timeout -s TERM 90 python3 -m modrl.experiments.sketch_reproduction --seeds 1 --progress-every 20 \
        --run-root runs/gpu_check_seed --out /tmp --set device=cuda agent.rollout_graph=cuda 2>&1 | tail -20 | tee -a "$out/bench.txt"
    ;;
esac
echo "done: $out"
