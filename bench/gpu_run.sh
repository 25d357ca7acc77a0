#!/usr/bin/env bash
# The prepared GPU run (BENCHMARKS.md, "GPU"), on a lent device machine, after the onnxruntime-gpu parts
# were copied to /tmp/ortparts (python -m bench device-wheels here; one device call per part there).
# Optional: .gpu/taesd-diffusers (a git-excluded copy of TAESD's diffusers folder) adds the TAESD rows.
# Writes $OUT/log.txt, $OUT/speed-sd15/ and $OUT/speed-taesd/.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench-out/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
python3 -m bench device-install
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers(), 'torch', torch.__version__, torch.cuda.get_device_name())"
CUDA="--providers CUDAExecutionProvider CPUExecutionProvider --torch-device cuda --threads 16 --repeats 10 --io-binding"
[ -d /tmp/sd15 ] || python3 -m export.random_pipeline --output /tmp/sd15
[ -d /tmp/sd15-fp16 ] || python3 -m export --model /tmp/sd15 --output /tmp/sd15-fp16 --dtype fp16 --no-validate -q
python3 -m bench speed --bundle /tmp/sd15-fp16 --pipeline /tmp/sd15 $CUDA --torch-dtype fp16 --out "$OUT/speed-sd15"
if [ -d .gpu/taesd-diffusers ]; then
  [ -d /tmp/taesd ] || python3 -m export --vae .gpu/taesd-diffusers --components vae_encoder vae_decoder --output /tmp/taesd --no-validate -q
  python3 -m bench speed --bundle /tmp/taesd --pipeline .gpu/taesd-diffusers --stages encode decode --size 512 --width 768 $CUDA --out "$OUT/speed-taesd"
fi
