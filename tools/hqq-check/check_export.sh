#!/bin/bash
# Check a loftq-lens HQQ export with the real stack (by hand, not CI), inside the Debian 13 chroot
# that shared/recipes/hqq-transformers-peft-cpu.md builds: transformers 4.57.1 + PEFT 0.17.1, and
# transformers 5.4.0 + PEFT 0.20.0 under /opt/v5, /opt/v5peft. Run as root (it bind-mounts).
#
#   check_export.sh DIR ORIG_CKPT
#     DIR        output of `node dist/cli.js quantize ORIG_CKPT --out DIR --format hqq ...`
#                (config.json with quantization_config, model.safetensors[.index.json], loftq_hqq.py,
#                 loftq_init/{adapter_model.safetensors,adapter_config.json}, loftq-report.json)
#     ORIG_CKPT  the original float checkpoint folder (config.json + model.safetensors or shards)
#   env: CHROOT (default /work/hqq-chroot), TOKENS (comma-separated ids, default a fixed 12)
#
# (a) 4.57: from_pretrained(DIR, device_map="cpu") -> HQQLinear count, nbits per module, logits
#     (bf16 checkpoints cast with model.to(cpu, bf16), the 4.57 caveat); load_model on 4.57 agrees;
# (b) 5.4: DIR/loftq_hqq.py load_model -> the same logits, asserted equal;
# (c) both: PeftModel.from_pretrained(model, DIR/loftq_init, is_trainable=True), forward + backward, and
#     per module ‖W − dequantize() − (alpha/r)·B·A‖/‖W‖ against ORIG next to the report's relError.
# Exit status 0 when every check passed. DIR and ORIG are bind-mounted read-only into the chroot.
set -euo pipefail
[ $# -eq 2 ] || { sed -n 6,12p "$0"; exit 2; }
CHROOT=${CHROOT:-/work/hqq-chroot}
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(realpath "$1"); ORIG=$(realpath "$2")
for f in "$DIR/config.json" "$DIR/loftq_hqq.py" "$DIR/loftq_init/adapter_config.json" "$ORIG/config.json"; do
  [ -f "$f" ] || { echo "check_export: $f not found" >&2; exit 2; }
done
[ -x "$CHROOT/usr/bin/python3" ] || { echo "check_export: no chroot at $CHROOT (see the recipe)" >&2; exit 2; }

MOUNTED=()  # what this run mounts, unmounted again on exit (a chroot left with /dev bound is a trap for rm -rf)
WORK=$(mktemp -d "$CHROOT/tmp/check-export.XXXXXX"); IN=${WORK#"$CHROOT"}
cleanup() {
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount "${MOUNTED[i]}" || echo "check_export: umount ${MOUNTED[i]} failed" >&2; done
  mountpoint -q "$WORK/out" || mountpoint -q "$WORK/orig" || rm -rf "$WORK"
}
trap cleanup EXIT
for d in proc sys dev dev/pts; do
  mountpoint -q "$CHROOT/$d" || { mount --bind "/$d" "$CHROOT/$d" && MOUNTED+=("$CHROOT/$d"); }
done
mkdir -p "$WORK/out" "$WORK/orig" "$WORK/bin"
mount --bind "$DIR" "$WORK/out" && MOUNTED+=("$WORK/out") && mount -o remount,ro,bind "$WORK/out"
mount --bind "$ORIG" "$WORK/orig" && MOUNTED+=("$WORK/orig") && mount -o remount,ro,bind "$WORK/orig"
cp "$HERE/check_export.py" "$WORK/bin/"

run() { chroot "$CHROOT" env PYTHONDONTWRITEBYTECODE=1 TOKENS="${TOKENS:-1,403,407,261,378,365,275,13,2,99,7,300}" HF_HUB_OFFLINE=1 "$@"; }
filter() { grep -v -E "^\s*$|Warning|warn\(|dispatched using accelerate" || true; }
rc=0
run python3 "$IN/bin/check_export.py" v4 "$IN/out" "$IN/orig" "$IN/v4.pt" 2>&1 | filter || rc=1
if [ -f "$WORK/v4.pt" ]; then
  run env PYTHONPATH=/opt/v5peft:/opt/v5 python3 "$IN/bin/check_export.py" v5 "$IN/out" "$IN/orig" "$IN/v5.pt" "$IN/v4.pt" 2>&1 | filter || rc=1
else
  echo "check_export: the 4.57 stage left no result; 5.x stage skipped"; rc=1
fi
echo "check_export: $([ $rc -eq 0 ] && echo PASS || echo FAIL) ($DIR)"
exit $rc
