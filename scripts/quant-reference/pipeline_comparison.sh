#!/bin/bash
# End-to-end comparison of `moe-quant quantize --no-true-sequential` with pipeline_reference.py (dev-only).
# For each fixture: calibration windows from our CLI, ours (quantize + eval) and the PyTorch reference for
# rtn/gptq/agq × 4/3 bits, then a Markdown table (compare_results.py). Run from the repository root.
# Every CPU-heavy step takes /tmp/cpu.lock (shared machine). Outputs: $WORK/{refcal,refq,refres,reflogs}.
#   scripts/quant-reference/pipeline_comparison.sh [fixture ...]      (default: the three tiny fixtures)
set -euo pipefail
SHARED=$(cd "$(dirname "$0")/../../../shared" && pwd)
FIX=${FIXTURES:-$SHARED/fixtures}
C4=${C4:-$SHARED/data/c4/c4-en-train.00000-of-01024.first1000.jsonl}
WIKI=${WIKI:-$SHARED/data/wikitext-2-raw/wiki.test.raw}
WORK=${WORK:-/tmp}
NAMES=${*:-tiny-mixtral tiny-deepseek-v3 tiny-qwen3-moe}
L="flock /tmp/cpu.lock"
mkdir -p "$WORK/refcal" "$WORK/refq" "$WORK/refres" "$WORK/reflogs"
for N in $NAMES; do
  $L ./bin/moe-quant calibrate --model "$FIX/$N" --data "$C4" --samples 128 --seq-len 512 --seed 0 --routing-bias none \
     --device cpu --out "$WORK/refcal/$N" > "$WORK/reflogs/cal-$N.log" 2>&1
  $L ./bin/moe-quant eval --model "$FIX/$N" --data "$WIKI" --seq-len 256 --max-windows 40 --device cpu --json \
     > "$WORK/refres/ours-$N-fp.json"
  for B in 4 3; do
    F=gptq; [ "$B" = 3 ] && F=dequantized
    for M in rtn gptq agq; do
      O="$WORK/refq/$N-$M-$B"
      $L ./bin/moe-quant quantize --model "$FIX/$N" --calib "$WORK/refcal/$N" --method $M --bits $B --group-size 128 \
         --asym --no-true-sequential --format $F --device cpu --no-eval --out "$O" --force > "$WORK/reflogs/q-$N-$M-$B.log" 2>&1
      $L ./bin/moe-quant eval --model "$O" --data "$WIKI" --seq-len 256 --max-windows 40 --device cpu --json \
         > "$WORK/refres/ours-$N-$M-$B.json"
      cp "$O/quant-report.json" "$WORK/refres/quant-report-$N-$M-$B.json"
      rm -rf "$O"
    done
  done
  $L .venv/bin/python scripts/quant-reference/pipeline_reference.py --model "$FIX/$N" --calib "$WORK/refcal/$N" \
     --eval-data "$WIKI" --methods rtn,gptq,agq --bits 4,3 --out "$WORK/refres/ref-$N.json" > "$WORK/reflogs/ref-$N.log" 2>&1
done
.venv/bin/python scripts/quant-reference/compare_results.py --dir "$WORK/refres" $NAMES
