# Sourced by the tests that need a small file system of their own: a loop-mounted ext4
# image. Needs root and loop devices; without them the test prints why and exits 77
# (ctest: skipped). Expects $work (the test's work directory, made anew here); defines
#   skip WHY                 exit 77 saying why
#   loop_fs SIZE MOUNTPOINT  make an ext4 image of SIZE in $work and mount it (sets $mnt)
# and, at exit, unmounts it (retrying, then lazily), removes the image and, unless keep=1,
# removes $work (a failing test sets keep=1 to leave its logs).
skip() {
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" = 0 ] || skip "not root (uid $(id -u)): cannot loop-mount a file system"
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 not found"

rm -rf "$work" && mkdir -p "$work" && work=$(cd "$work" && pwd)
image="$work/fs.img" mnt=""
mounted=0
keep=0
cleanup() {
  if [ "$mounted" = 1 ]; then
    for _ in 1 2 3 4 5; do
      umount "$mnt" 2>/dev/null && { mounted=0; break; }
      sleep 1
    done
    [ "$mounted" = 1 ] && { echo "warning: could not unmount '$mnt'; detaching it lazily"; umount -l "$mnt"; }
  fi
  rm -f "$image"
  if [ "$keep" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

loop_fs() {
  local size=$1
  mnt=$2
  truncate -s "$size" "$image" || skip "cannot make a $size image in '$work'"
  mkfs.ext4 -q -F -m 0 "$image" >"$work/mkfs.log" 2>&1 || skip "mkfs.ext4 failed: $(cat "$work/mkfs.log")"
  mkdir -p "$mnt"
  mount -o loop "$image" "$mnt" 2>"$work/mount.err" || skip "mount -o loop failed: $(cat "$work/mount.err")"
  mounted=1
}
