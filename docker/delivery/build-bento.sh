#!/usr/bin/env bash
# images.yml's Bento step (`make bento-release`): import the model that the repository
# variables name, then build the Bento that carries it.
#   TIKKA_GCS_BUCKET and TIKKA_GCS_PREFIX set: models/download_model.py imports that
#     checkpoint from Google Cloud Storage (credentials from google-github-actions/auth
#     on GitHub; STORAGE_EMULATOR_HOST points at the emulator in make test-delivery);
#   unset: the embedded default, an ImageNet model and not the production Food-101 one.
# Either way the job summary says which model went in. Writes build/delivery/bento.env
# (BENTO, MODEL_TAG, MODEL_SOURCE) for publish-image.sh, and $GITHUB_OUTPUT when set.
set -euo pipefail
cd "$(dirname "$0")/../.."
# bentoml reads and writes the store under BENTOML_HOME; its default (~/bentoml) is not
# the project's .bentoml/ that make uses, where `bentoml containerize` looks next.
: "${BENTOML_HOME:?run it through make (make bento-release), which sets BENTOML_HOME}"
BIN=${BIN:-.venv/bin}
out=build/delivery
mkdir -p "$out"
sha=${GITHUB_SHA:-$(git rev-parse HEAD)}
rm -f "$out/model-tag"
if [ -n "${TIKKA_GCS_BUCKET:-}" ]; then
  : "${TIKKA_GCS_PREFIX:?TIKKA_GCS_BUCKET is set but TIKKA_GCS_PREFIX is not}"
  source="gs://$TIKKA_GCS_BUCKET/${TIKKA_GCS_PREFIX%/}"
  "$BIN/python" models/download_model.py --bucket "$TIKKA_GCS_BUCKET" --prefix "$TIKKA_GCS_PREFIX" --tag-file "$out/model-tag"
else
  source="the embedded default (ImageNet EfficientNet-Lite0, not the Food-101 production model: TIKKA_GCS_BUCKET is not set)"
  "$BIN/python" models/import_default_model.py --tag-file "$out/model-tag"
fi
model_tag=$(cat "$out/model-tag")
bento=$("$BIN/bentoml" build --arg model_tag="$model_tag" --arg git_sha="$sha" --output tag | sed -n 's/^__tag__://p')
[ -n "$bento" ] || { echo "bentoml build printed no tag" >&2; exit 1; }
printf 'BENTO=%q\nMODEL_TAG=%q\nMODEL_SOURCE=%q\n' "$bento" "$model_tag" "$source" > "$out/bento.env"
echo "Bento $bento packages $model_tag from $source"
if [ -n "${GITHUB_OUTPUT:-}" ]; then printf 'bento=%s\nmodel_tag=%s\n' "$bento" "$model_tag" >> "$GITHUB_OUTPUT"; fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  printf '### The model in this image\n\n`%s`, from %s, in the Bento `%s` (commit `%s`).\n' \
    "$model_tag" "$source" "$bento" "$sha" >> "$GITHUB_STEP_SUMMARY"
fi
