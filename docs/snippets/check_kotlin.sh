#!/usr/bin/env bash
# Compile the Kotlin snippet of docs/edge.md with kotlinc against signature stubs (stubs/) of the
# ExecuTorch Android API (org.pytorch:executorch-android), android.graphics.Bitmap and org.json.
# Needs kotlinc (npm install -g kotlin-compiler) and a JDK (apt-get install default-jdk-headless).
# Usage: docs/snippets/check_kotlin.sh   (exit 0 when the snippet compiles)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kotlinc="$(command -v kotlinc || true)"
if [ -z "$kotlinc" ] && command -v npm >/dev/null; then  # the npm package does not link it onto PATH
  kotlinc="$(npm root -g)/kotlin-compiler/bin/kotlinc"
fi
[ -x "$kotlinc" ] || { echo "kotlinc not found: npm install -g kotlin-compiler" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The first ```kotlin block of docs/edge.md.
awk '/^```kotlin/{on=1; next} on && /^```/{exit} on' "$here/../edge.md" > "$work/Snippet.kt"
[ -s "$work/Snippet.kt" ] || { echo "no kotlin block in docs/edge.md" >&2; exit 2; }
"$kotlinc" -nowarn -d "$work/out" "$work/Snippet.kt" $(find "$here/stubs" -name '*.java')
echo "docs/edge.md Kotlin snippet compiles"
