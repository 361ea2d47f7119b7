#!/usr/bin/env bash
# The import study, end to end (docs/findings.md, "Converting a pretrained model to differential attention"):
# pretrain a vanilla model, export it to the Hugging Face Llama layout, import it back as vanilla (the
# control), differential V1 and differential V2, fine-tune the three for the same tokens at three seeds, and
# compare. Run from the repository root:  bash recipes/import-study/run.sh
set -euo pipefail
out=runs/import-study
diffformer train recipes/import-study/pretrain.yaml --resume
[ -d $out/hf ] || diffformer export $out/pretrain $out/hf
[ -d $out/imported-vanilla ] || diffformer import $out/hf $out/imported-vanilla
[ -d $out/imported-differential ] || diffformer import $out/hf $out/imported-differential \
  --attention differential --second-map zero --lambda-warmup 100
[ -d $out/imported-differential-v2 ] || diffformer import $out/hf $out/imported-differential-v2 \
  --attention differential_v2 --second-map zero --lambda-warmup 100
for kind in vanilla differential differential-v2; do
  diffformer train recipes/import-study/finetune-$kind.yaml --resume
done
diffformer compare $out/finetune-vanilla/seed=* $out/finetune-differential/seed=* \
  $out/finetune-differential-v2/seed=* -o $out/comparison
