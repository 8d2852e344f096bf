#!/usr/bin/env bash
# The validation-data tuning behind configs/bench/quickstart.yaml, tiny.yaml and small.yaml.
#
#   ENCSHIELD_DATA=../shared/data bash benchmarks/tune_tiny.sh [DEFENSE...]
#
# Every run: the zoo SimCLR encoder; 2,000 training images of cifar10:train[:40000]; scored on
# 1,000 validation images of cifar10:train[40000:45000] (never the test split; the attacker's
# surrogate images are train[45000:]), white-box PGD-10 at 8/255 on 200 of them; the criterion
# (encshield tune): highest validation RA among settings that keep 70 % of the no-defense BA.
# Pilot grids that found the region (head/encoder learning rates, epochs, warm start,
# lambda_gr) are in benchmarks/results/tune/probe*.json. Results: benchmarks/results/tune/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
out=benchmarks/results/tune
mkdir -p "$out"
common=(--encoder zoo:simclr-cifar10-r18w16 --data "cifar10:train[:40000]" --limit 2000
        --val "cifar10:train[40000:45000]" --val-limit 1000 --val-attack-limit 200 --no-progress)
fast=(--set batch_size=64 --set amp=true --set channels_last=true --set head_init_epochs=10
      --set epochs=10)
attack=(--set attack.steps=3 --set attack.step_size=2.7/255)

run() {  # run NAME ARGS...: one tune, its table on stdout, its record in $out/NAME.json
  local name=$1; shift
  .venv/bin/encshield tune "$@" "${common[@]}" --output "$out/$name.json"
}

for defense in "${@:-standard pgd_at trades mart genaf}"; do
  for d in $defense; do
    case $d in
      standard)
        run standard standard "${fast[@]}" --grid encoder_lr=1e-4,1e-3 --grid head_lr=1e-4,1e-3 ;;
      pgd_at|trades|mart)
        run "$d" "$d" "${fast[@]}" "${attack[@]}" --set head_lr=1e-4 \
          --grid encoder_lr=1e-3,3e-3 --grid head_init=trained,random ;;
      genaf)
        run genaf genaf --set stage1.batch_size=64 --set stage1.amp=true \
          --set stage1.channels_last=true --set stage1.head_init_epochs=10 --set stage1.epochs=10 \
          --set stage1.head_lr=1e-4 --set stage1.attack.steps=3 --set stage1.attack.step_size=0.012 \
          --set probe_size=256 --set ascent_epochs=2 --set stage2_epochs=1 \
          --set stage2_batch_size=64 --grid stage1.lambda_gr=5,20 --grid stage1.encoder_lr=1e-3,3e-3 ;;
      *) echo "unknown defense $d" >&2; exit 2 ;;
    esac
  done
done
