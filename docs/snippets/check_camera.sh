#!/usr/bin/env bash
# Compile docs/edge.md's camera snippets: the JNI glue (// camera_jni.cpp) and the iOS glue
# (// camera_ios.cpp) with g++ against the real agiqa/scorer.h, the JDK's jni.h and a CoreVideo
# signature stub (stubs/CoreVideo); and the CameraX Kotlin block (the block holding
# "fun score(image: ImageProxy)") with kotlinc against stubs/, when kotlinc is installed.
# Usage: docs/snippets/check_camera.sh   (exit 0: compiled; 2: a tool is missing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
doc="$here/../edge.md"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
command -v g++ >/dev/null || { echo "g++ not found (apt-get install g++)" >&2; exit 2; }
jni="$(dirname "$(find /usr/lib/jvm -name jni.h 2>/dev/null | head -1)")"
[ -f "$jni/jni.h" ] || { echo "jni.h not found (apt-get install openjdk-17-jdk-headless)" >&2; exit 2; }
# The ```cpp block whose first line is "// NAME".
block() { awk -v name="// $1" '/^```cpp/{on=1; first=1; next} on && /^```/{on=0; next}
  on && first {first=0; if (index($0, name) != 1) {on=0; next}} on' "$doc"; }
for name in camera_jni.cpp camera_ios.cpp; do
  block "$name" > "$work/$name"
  [ -s "$work/$name" ] || { echo "no '// $name' cpp block in docs/edge.md" >&2; exit 1; }
  g++ -std=c++17 -fsyntax-only -Wall -Wno-multichar -I"$root/edge_runtime/cpp/include" -I"$jni" \
    -I"$jni/linux" -I"$here/stubs" "$work/$name"
  echo "docs/edge.md $name compiles"
done
kotlinc="$(command -v kotlinc || true)"
if [ -z "$kotlinc" ] && command -v npm >/dev/null && [ -x "$(npm root -g)/kotlin-compiler/bin/kotlinc" ]; then
  kotlinc="$(npm root -g)/kotlin-compiler/bin/kotlinc"
fi
if [ -n "$kotlinc" ]; then
  awk '/^```kotlin/{on=1; buf=""; next} on && /^```/{on=0; if (buf ~ /fun score\(image: ImageProxy\)/) print buf; next}
    on {buf = buf $0 "\n"}' "$doc" > "$work/Camera.kt"
  "$kotlinc" -nowarn -d "$work/out" "$work/Camera.kt" $(find "$here/stubs" -name '*.java')
  echo "docs/edge.md CameraX Kotlin snippet compiles"
else
  echo "kotlinc not found: the CameraX Kotlin block was not compiled (npm install -g kotlin-compiler)"
fi
