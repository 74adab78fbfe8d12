#!/usr/bin/env bash
# The GPU checks of issue 4 in one short run (about 9 minutes on an H100/H200), for a session that
# is lent a device: CPU/GPU agreement and the captured rollout's correctness (tests/test_cuda.py),
# the captured rollout's speed against eager (benchmarks/rollout_graph.py), and one seed of the
# reproduction config trained with the captured rollout for a few minutes (its episodes/s early in
# the curriculum), then its five runs side by side in one process (the 15-minute target's form).
# Writes everything under ${OUT:-gpu_check}/.
#
#     bash benchmarks/gpu_check.sh fetch      # here, on a machine with pip's registry: the wheels the
#                                             # GPU image lacks (gymnasium, minigrid, SB3, ...) into .whl/
#     bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root (carry .whl)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = fetch ]; then  # the GPU image's python is 3.12 with torch; nothing can be fetched there
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        gymnasium==1.4.0 farama-notifications==0.0.6 minigrid==3.2.0 pygame-ce==2.5.8 stable-baselines3==2.9.2
    ls .whl
    exit
fi
if [ -d .whl ] && ! python3 -c "import gymnasium" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

echo "== tests/test_cuda.py"
timeout 240 python3 -m pytest -q tests/test_cuda.py 2>&1 | tail -30 | tee "$out/test_cuda.txt"

echo "== benchmarks/rollout_graph.py"
timeout 150 python3 benchmarks/rollout_graph.py --num-envs 512 4096 --updates 20 2>&1 | tee "$out/rollout_graph.txt"

echo "== one seed of craft_sketch.yaml with the captured rollout, 90 s"
timeout 90 python3 -m modrl.experiments.sketch_reproduction --seeds 1 --progress-every 20 \
    --run-root "$out/runs" --out "$out" --set device=cuda agent.rollout_graph=cuda 2>&1 | tail -20 | tee "$out/seed1.txt"

echo "== the five seeds' runs side by side in one process (--batched, agent.num_runs=5), captured rollout, 120 s"
timeout 120 python3 -m modrl.experiments.sketch_reproduction --batched --seeds 1 2 3 4 5 --progress-every 20 \
    --run-root "$out/runs_batched" --out "$out/batched" --set device=cuda agent.rollout_graph=cuda 2>&1 | tail -20 | tee "$out/batched.txt"
echo "done: $out"
