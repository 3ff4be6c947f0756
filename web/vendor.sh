#!/bin/sh
# Copies the background-blur segmentation runtime and model (the npm package @mediapipe/selfie_segmentation,
# pinned in package.json / package-lock.json, Apache-2.0) from node_modules into static/vendor/, so the server
# serves them from its own origin and the wheel carries them as package data. Run from web/ after `npm ci`
# (make does both; the Dockerfile's web stage too). static/vendor/ is generated: never committed.
set -eu
src=node_modules/@mediapipe/selfie_segmentation
dest=static/vendor/selfie_segmentation
test -f "$src/selfie_segmentation.js" || { echo "vendor.sh: $src missing (run npm ci first)" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$dest"
for f in selfie_segmentation.js selfie_segmentation.binarypb \
         selfie_segmentation.tflite selfie_segmentation_landscape.tflite \
         selfie_segmentation_solution_simd_wasm_bin.js selfie_segmentation_solution_simd_wasm_bin.wasm \
         selfie_segmentation_solution_simd_wasm_bin.data \
         selfie_segmentation_solution_wasm_bin.js selfie_segmentation_solution_wasm_bin.wasm; do
  cp "$src/$f" "$dest/$f"
  chmod 0644 "$dest/$f"
done
