#!/usr/bin/env bash
# A glance-tiny training run (v0.4 onwards): data-parallel on one multi-GPU host (torchrun, one process per GPU), within one hold of
# the machine (it goes back after 30 s idle, so each call follows the previous one at once; checkpoints stay in
# training/runs/v04 and the data in $DATA_HOME between calls).
#   The shard set is larger than one device call can upload beside the repository, so it travels in parts
#   (training/data/upN, each named in one call's carry; index.json in up1) and is put together in $DATA_HOME:
#   1. bash training/run.sh stash   copies the carried parts into $DATA_HOME (call this once per part)
#   2. bash training/run.sh start   dense stage 0 in its own session (setsid, --max-minutes $DENSE_MIN), resumed
#                                       from models/glance-tiny (RESUME=), FIM with PSM and SPM orders; a miniature of
#                                       the later stages beside it on 2 GPUs (new code paths), then progress
#      bash training/run.sh watch   (as often as needed) keeps the machine held while stage 0 runs on
#   3. bash training/run.sh finish  waits for dense, indexer warm-up, sparse (both data-parallel), FP8 export
#                                       (+ an all-bf16 copy checked against HF transformers)
#   4. bash training/run.sh eval    eval.py (loss dense/sparse, FIM in PSM and SPM order, next line), the
#                                       export's files and logs to $OUT
set -u -o pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
. training/run_lib.sh
OUT=${OUT:-v04-out}; mkdir -p "$OUT"
# v0.4: RUN_NAME=v04 SPM_RATE=0.5 DENSE_STEPS=1800 (PSM and SPM); v0.5: RUN_NAME=v05 (SPM only, as shipped);
# v0.6: the defaults (the config's wider experts grow the v0.5 export, train.py grow_model)
# v0.7: RUN_NAME=v07 MINI=0 DENSE_MIN=16 DENSE_LR=4e-4 (the v0.6 export trained on, same corpus and config)
# v0.8: as v0.7 with RUN_NAME=v08 FIM_PER_PIECE=12 (three times the FIM middles per sequence: ~2 per sequence before)
# v0.9: as v0.8 with RUN_NAME=v09 on the v0.9 corpus (eight upload parts, stashed two per call)
RUN_NAME=${RUN_NAME:-v06}
R=training/runs/$RUN_NAME; mkdir -p $R
DATA_HOME=${DATA_HOME:-/root/glance-data}
CFG=training/configs/glance-tiny.json
TOK=models/glance-tiny                      # the shipped tokenizer (the shards were made with it)
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
D=$DATA_HOME/shards
C="--config $CFG --data $D --tokenizer $TOK"
FIM="--fim-rate 0.9 --fim-per-piece ${FIM_PER_PIECE:-4} --spm-rate ${SPM_RATE:-1.0}"
RUN="python3 -m torch.distributed.run --standalone --nproc-per-node"
DENSE_MIN=${DENSE_MIN:-10.0}

case "${1:-}" in
stash)
  mkdir -p $D
  n=0
  for p in training/data/up*; do
    [ -d "$p" ] || continue
    cp -n "$p"/* $D/ && n=$((n + 1))
  done
  say "stashed $n part(s): $(ls $D | wc -l) files, $(du -sh $D | cut -f1) in $D"
  python3 - "$D" <<'PY'
import json, os, sys
d = sys.argv[1]
if not os.path.exists(f"{d}/index.json"):
    print("index.json not here yet"); sys.exit(0)
idx = json.load(open(f"{d}/index.json"))
names = [s["file"] for sp in idx["splits"].values() for s in sp["shards"]]
missing = [n for n in names if not os.path.exists(f"{d}/{n}")]
print(f"index lists {len(names)} shards; missing {len(missing)}: {missing[:6]}")
PY
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader
  ;;
start)
  say "dense stage 0 on $NGPU GPUs in the background"
  setsid $RUN $NGPU training/train.py --stage dense $C --out $R/dense $FIM --total-steps ${DENSE_STEPS:-1700} \
      --resume ${RESUME:-models/glance-tiny} --lr ${DENSE_LR:-8e-4} --warmup ${WARMUP:-60} \
      --max-minutes $DENSE_MIN --fit-schedule --data-workers 8 --eval-every 200 > $R/dense.log 2>&1 < /dev/null &
  echo $! > $R/dense.pid
  sleep 5
  if [ "${MINI:-1}" = 1 ]; then    # MINI=0 when no training code changed since the last run
  M=training/runs/mini; rm -rf $M; mkdir -p $M
  MC="$C --seq-len 1024 --eval-seqs 2 --log-every 2 --compile off"
  say "mini pipeline on 2 GPUs beside it: dense 4 steps (PSM + SPM), indexer 2, sparse 2, export, eval"
  timeout 150 $RUN 2 training/train.py --stage dense $MC $FIM --out $M/dense --steps 44 --fit-schedule --max-minutes 2 \
      --total-steps 50 --warmup 2 --eval-every 100 --data-workers 3 2>&1 | grep -v "^\s*$" | tail -n 6
  timeout 90 $RUN 2 training/train.py --stage indexer $MC --out $M/indexer \
      --resume $M/dense/ckpt.pt --steps 2 --total-steps 50 --warmup 1 --eval-every 100 2>&1 | tail -n 2
  timeout 90 $RUN 2 training/train.py --stage sparse $MC $FIM --out $M/sparse \
      --resume $M/indexer/ckpt.pt --steps 2 --total-steps 50 --warmup 1 --eval-every 100 2>&1 | tail -n 2
  timeout 120 python3 training/export.py --ckpt $M/sparse/ckpt.pt --config $CFG --tokenizer $TOK \
      --out $M/glance-tiny --embeddings-bf16 2>&1 | tail -n 4
  timeout 150 python3 training/eval.py --model $M/glance-tiny --data $D --out $M/eval.json --skip-ref \
      --cases 4 --heldout-seqs 2 --ctx 2048 --max-new 24 --workers 2 2>&1 | tail -n 18
  say mini done
  fi
  grep -m 3 "grew the model\|Error\|error:" $R/dense.log   # a grown start logs its function check (train.py grow_model)
  while [ $(( $(date +%s) - T0 )) -lt ${WATCH_S:-540} ] && kill -0 $(cat $R/dense.pid) 2>/dev/null; do sleep 10; done
  progress $R/dense.log 14
  tail -n 3 $R/dense.log
  say end of call
  ;;
watch)       # keeps the hold while stage 0 runs on (a call may last 10 minutes; the machine goes back after 30 s idle)
  while [ $(( $(date +%s) - T0 )) -lt ${WATCH_S:-560} ] && kill -0 $(cat $R/dense.pid) 2>/dev/null; do sleep 10; done
  progress $R/dense.log 10
  say end of call
  ;;
finish)
  while kill -0 $(cat $R/dense.pid) 2>/dev/null; do sleep 5; done
  progress $R/dense.log 8
  say indexer warm-up on $NGPU GPUs
  $RUN $NGPU training/train.py --stage indexer $C --out $R/indexer --resume $R/dense/ckpt.pt \
      --max-minutes ${INDEXER_MIN:-2.0} --eval-every 1000 > $R/indexer.log 2>&1
  progress $R/indexer.log 3
  say sparse on $NGPU GPUs
  $RUN $NGPU training/train.py --stage sparse $C $FIM --out $R/sparse --resume $R/indexer/ckpt.pt \
      --max-minutes ${SPARSE_MIN:-1.6} --data-workers 8 --eval-every 1000 > $R/sparse.log 2>&1
  progress $R/sparse.log 3
  say export
  export_run
  say end of call
  ;;
eval)
  python3 training/eval.py --model $R/glance-tiny --data $D --cases ${CASES:-300} --workers ${EVAL_WORKERS:-40} \
      --max-minutes ${EVAL_MIN:-5.0} --out $R/eval.json --ref-out $R/reference_logits.json > $R/eval.log 2>&1
  tail -n 30 $R/eval.log
  S=$R/glance-tiny
  cp $S/*.safetensors $OUT/
  tar -cf $OUT/run.tar -C $R --transform "s,^glance-tiny/,ship/," glance-tiny/config.json \
      glance-tiny/generation_config.json glance-tiny/model.safetensors.index.json export.json eval.json \
      reference_logits.json dense/log.jsonl dense/summary.json indexer/log.jsonl indexer/summary.json \
      sparse/log.jsonl sparse/summary.json dense.log indexer.log sparse.log export.log eval.log
  ls -la $OUT
  say end of call
  ;;
*) echo "usage: run.sh stash|start|watch|finish|eval"; exit 2;;
esac
