# Shared by the device-call scripts (run.sh, run_v03.sh), sourced after their own settings: the Python environment,
# the call's clock and the two log helpers.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
say() { echo "=== $* ($(( $(date +%s) - T0 ))s)"; }                                          # a step, with seconds since the call began
progress() { grep -h "step\|eval" "$1" 2>/dev/null | grep -v "^\s*$" | tail -n "${2:-6}"; }  # the last log lines of a run

# The FP8 export of $R/sparse (and an all-bf16 copy checked against HF transformers), the tail of its log, and the
# stage-0 log and export summary copied to $OUT. Uses R, CFG, TOK and OUT of the calling script.
export_run() {
  python3 training/export.py --ckpt $R/sparse/ckpt.pt --config $CFG --tokenizer $TOK --out $R/glance-tiny \
      --embeddings-bf16 --bf16-out $R/glance-tiny-bf16 --check-hf --info-out $R/export.json > $R/export.log 2>&1
  tail -n 14 $R/export.log
  cp $R/dense/log.jsonl $OUT/dense-log.jsonl; cp $R/export.json $OUT/ 2>/dev/null
}
