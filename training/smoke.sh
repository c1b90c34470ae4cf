#!/usr/bin/env bash
# End-to-end smoke test of the training pipeline on the GPU host (about 3.5 minutes on one H100):
# tiny dense run (seq 1024) -> indexer warm-up -> sparse -> FP8 export (+ bf16 copy checked in HF) -> eval on a few
# cases, then throughput of the real config at seq 8192 (dense eager, dense compiled, one sparse step).
#   carry: ["training/data/shards", "training/data/tokenizer"]
#   command: bash training/smoke.sh
# Logs go to $OUT (or ./smoke-out): smoke.log, eval.json, reference_logits.json, summaries.json.
set -u -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-smoke-out}
mkdir -p "$OUT"
R=training/runs/smoke
rm -rf "$R"; mkdir -p "$R"
CFG=training/configs/glance-tiny.json
D=training/data/shards
LOG="$OUT/smoke.log"
T0=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - T0 ))s)"; }
{
step env
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader
python3 -c "import torch, transformers, tokenizers, safetensors, tqdm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'safetensors', safetensors.__version__)"

COMMON="--config $CFG --data $D --seq-len 1024 --eval-seqs 4 --log-every 5"
step dense 20 steps seq 1024
timeout 90 python3 training/train.py --stage dense $COMMON --out $R/dense --steps 20 --total-steps 200 --warmup 5 \
  --eval-every 10 --compile off
step indexer 8 steps
timeout 60 python3 training/train.py --stage indexer $COMMON --out $R/indexer --resume $R/dense/ckpt.pt --steps 8 \
  --total-steps 100 --warmup 2 --eval-every 4
step sparse 6 steps
timeout 60 python3 training/train.py --stage sparse $COMMON --out $R/sparse --resume $R/indexer/ckpt.pt --steps 6 \
  --total-steps 100 --warmup 2 --eval-every 3
step resume sparse 2 more steps
timeout 60 python3 training/train.py --stage sparse $COMMON --out $R/sparse --steps 2 --total-steps 100 --warmup 2 \
  --eval-every 1000
step export
timeout 90 python3 training/export.py --ckpt $R/sparse/ckpt.pt --config $CFG --tokenizer training/data/tokenizer \
  --out $R/glance-tiny --bf16-out $R/glance-tiny-bf16 --check-hf --info-out $R/export.json
step eval
timeout 120 python3 training/eval.py --model $R/glance-tiny --data $D --out "$OUT/eval.json" \
  --ref-out "$OUT/reference_logits.json" --cases 6 --heldout-seqs 4 --ctx 4096 --max-new 32
step bench dense seq 8192 eager
timeout 75 python3 training/train.py --stage dense --config $CFG --data $D --out $R/bench_eager --steps 10 \
  --eval-seqs 1 --eval-every 100000 --log-every 1 --compile off --no-ckpt
step bench sparse seq 8192 2 steps
timeout 60 python3 training/train.py --stage sparse --config $CFG --data $D --out $R/bench_sparse --steps 2 \
  --eval-seqs 1 --eval-every 100000 --log-every 1 --no-ckpt
step bench dense seq 8192 compiled
timeout 120 python3 training/train.py --stage dense --config $CFG --data $D --out $R/bench_compiled --steps 12 \
  --eval-seqs 1 --eval-every 100000 --log-every 1 --compile on --no-ckpt
step done
python3 - "$R" "$OUT/summaries.json" <<'EOF'
import json, os, sys
r, out = sys.argv[1], sys.argv[2]
res = {}
for d in sorted(os.listdir(r)):
    for fn in ("summary.json", "export.json"):
        p = os.path.join(r, d, fn) if fn == "summary.json" else os.path.join(r, fn)
        if os.path.exists(p):
            res[d if fn == "summary.json" else "export"] = json.load(open(p))
json.dump(res, open(out, "w"), indent=1)
for k, v in res.items():
    if k != "export":
        print(k, {x: v.get(x) for x in ("step", "tok_per_s", "mean_step_s", "max_mem_gb", "micro_batch", "compiled", "last_eval")})
EOF
} 2>&1 | tee "$LOG"
