#!/bin/bash
# docs/training.md's distillation rows on a lent GPU machine (`device` tool), in two calls
# because one call carries at most 64 MiB. Here, once (with /.gpu/ in .git/info/exclude):
#   python benchmarks/train/gpu_shrink_imagenette.py --out .gpu
#   mkdir -p .gpu/pre .gpu/cache .gpu/whl; cp $DATA/pretrained/imagenet_{wnids,labels}.txt
#     $DATA/pretrained/mobilenet_v1_0.5_160_quant.tflite .gpu/pre/; cp TEACHER .gpu/cache/teacher.safetensors
#   pip download (cp312, manylinux) simplejpeg tflite -d .gpu/whl   (absent from the machine's image)
# Call 1 (carry .gpu/data_train .gpu/pre):  bash benchmarks/train/gpu_distill.sh stage
# Call 2 at once, while warm (carry .gpu/data_val .gpu/cache .gpu/whl .gpu/pre):
#   BUDGET=540 bash benchmarks/train/gpu_distill.sh
# Each run is time-guarded; logs and a tarball of the result JSONs come back in $OUT.
PY=${PY:-python3}; B=${GPU_BASE:-/root/gpu}; OUTD=${OUT:-/tmp/gpu_out}
mkdir -p "$B/md/imagenette" "$B/md/pretrained" "$B/cache" "$OUTD"
cp .gpu/pre/* "$B/md/pretrained/"
if [ "$1" = stage ]; then
  rm -rf "$B/md/imagenette/train" && cp -r .gpu/data_train/train "$B/md/imagenette/train"
  nvidia-smi --query-gpu=name,memory.total --format=csv
  exec $PY -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__)"
fi
EP=${EP:-15}; FT_EP=${FT_EP:-2}; W=${WORKERS:-14}; DEADLINE=$(( $(date +%s) + ${BUDGET:-540} ))
if ! $PY -c "import simplejpeg, tflite" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PYTHONPATH PYTHONUNBUFFERED=1 MOBILENET_V1_DATA=$B/md MOBILENET_V1_CACHE=$B/cache
rm -rf "$B/md/imagenette/val" && cp -r .gpu/data_val/val "$B/md/imagenette/val" && cp .gpu/cache/* "$B/cache/"
T=$B/cache/teacher.safetensors
COMMON="--channels-last --bf16 --workers $W --no-worker-idle --worker-nice 0"
job() {  # name, then train options
  local left=$(( DEADLINE - $(date +%s) )) name=$1; shift
  if [ $left -lt 30 ]; then echo "SKIP $name (${left}s left)"; return; fi
  echo "=== $name $(date +%T) ${left}s left"
  timeout $left $PY benchmarks/train/train_imagenette.py --name "gpu_$name" --work "$B/runs" -- "$@" $COMMON \
    > "$OUTD/gpu_$name.log" 2>&1
  echo "rc=$? $(date +%T)"; grep -a "top-1 (ties split)\|wall\|rror" "$OUTD/gpu_$name.log" | tail -3
}
job distill_scratch_0.25_128_teacher --scratch --alpha 0.25 --resolution 128 --epochs $EP --teacher $T
job distill_scratch_0.25_128_none --scratch --alpha 0.25 --resolution 128 --epochs $EP
job distill_finetune_0.5_160_teacher --weights mobilenet_v1_0.5_160_quant --recipe finetune --epochs $FT_EP --teacher $T
job distill_finetune_0.5_160_none --weights mobilenet_v1_0.5_160_quant --recipe finetune --epochs $FT_EP
MODERN="--recipe modern --lr 0.1 --batch-size 64"
job distill_modern_0.25_128_teacher --scratch --alpha 0.25 --resolution 128 --epochs $EP $MODERN --teacher $T
job distill_modern_0.25_128_none --scratch --alpha 0.25 --resolution 128 --epochs $EP $MODERN
(cd benchmarks/results && tar czf "$OUTD/gpu_results.tgz" train_gpu_*.json)
