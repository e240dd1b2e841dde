#!/usr/bin/env bash
# A software Vulkan for the WebGPU tests (`npm run test:gpu`) on a machine without a GPU, unpacked into
# .gl/software-vulkan/ of this repository — nothing is installed system-wide (Debian/Ubuntu with apt-get).
#
#   accepted/  Mesa lavapipe from Debian bookworm-backports (Mesa 25): onnxruntime's WebGPU (Dawn) accepts it.
#   rejected/  Debian 12's own lavapipe (Mesa 22.3): Dawn rejects it (missing shader*ArrayDynamicIndexing features);
#              the tests use it to check that device probing stays quiet and says what it found.
# Each gets the Vulkan loader (libvulkan1) and whatever else the system lacks, as apt resolves it against the
# installed packages, and an ICD manifest with an absolute library_path. env.json tells the GPU test config what to
# set (VK_DRIVER_FILES, LD_LIBRARY_PATH), for the GPU test process only.
# Idempotent: a finished install (env.json present) returns at once; delete .gl/software-vulkan to refresh it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="$PWD/.gl/software-vulkan"
[ -f "$DEST/env.json" ] && { echo "software Vulkan: already in ${DEST#"$PWD"/}"; exit 0; }
command -v apt-get >/dev/null || { echo "software-vulkan: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }

rm -rf "$DEST"
APT="$DEST/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-backports main\n' >"$APT/sources.list"
# Private sources, lists and cache: the system's apt state is read (to know what is installed), never changed.
apt_opts=(-qq -o "Dir::Etc::sourcelist=$APT/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$APT/lists"
  -o "Dir::Cache=$APT/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
apt-get "${apt_opts[@]}" update

# unpack SUITE DIR: mesa-vulkan-drivers from SUITE plus the packages it needs that are not installed, into DIR/root.
unpack() {
  local suite=$1 dir=$2 pkgs
  mkdir -p "$dir/debs" "$dir/root"
  # "Inst <name> [<old>] (<version> <suite> [<arch>])" lines of a simulated install name exactly what is missing.
  pkgs=$(apt-get "${apt_opts[@]}" -s install "mesa-vulkan-drivers/$suite" | sed -n 's/^Inst \([^ ]*\) .*(\([^ ]*\) .*/\1=\2/p')
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download $pkgs)
  for deb in "$dir"/debs/*.deb; do
    case "$(basename "$deb")" in
      mesa-vulkan-drivers_*) dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir/root" --wildcards './usr/lib/*/libvulkan_lvp.so' './usr/share/vulkan/icd.d/lvp_icd*.json' ;;
      *) dpkg -x "$deb" "$dir/root" ;;
    esac
  done
  rm -rf "$dir/debs"
  local lvp manifest libdirs
  lvp=$(find "$dir/root" -name libvulkan_lvp.so | head -n1)
  manifest=$(find "$dir/root/usr/share/vulkan/icd.d" -name 'lvp_icd*.json' | head -n1)
  [ -n "$lvp" ] && [ -n "$manifest" ] || { echo "software-vulkan: no lavapipe in mesa-vulkan-drivers/$suite" >&2; exit 1; }
  sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lvp\"#" "$manifest" >"$dir/lvp_icd.json"
  echo "$pkgs" >"$dir/packages"
  # Libraries land in usr/lib/<triplet> and, for packages not yet moved by usrmerge, lib/<triplet>.
  libdirs=$(dirname "$lvp")
  [ -d "$dir/root/lib/$(basename "$(dirname "$lvp")")" ] && libdirs="$libdirs:$dir/root/lib/$(basename "$(dirname "$lvp")")"
  echo "$libdirs" >"$dir/libdir"
}
unpack bookworm-backports "$DEST/accepted"
unpack bookworm "$DEST/rejected"
rm -rf "$APT"

version() { sed -n 's/^mesa-vulkan-drivers=//p' "$1/packages"; }
cat >"$DEST/env.json" <<EOF
{
  "mesa": "$(version "$DEST/accepted")",
  "env": { "VK_DRIVER_FILES": "$DEST/accepted/lvp_icd.json", "LD_LIBRARY_PATH": "$(cat "$DEST/accepted/libdir")" },
  "rejected": {
    "mesa": "$(version "$DEST/rejected")",
    "env": { "VK_DRIVER_FILES": "$DEST/rejected/lvp_icd.json", "LD_LIBRARY_PATH": "$(cat "$DEST/rejected/libdir")" }
  }
}
EOF
echo "software Vulkan: Mesa $(version "$DEST/accepted") lavapipe (and Debian 12's $(version "$DEST/rejected")) in ${DEST#"$PWD"/}"
