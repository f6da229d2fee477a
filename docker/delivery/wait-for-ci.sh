#!/usr/bin/env bash
# deploy.yml: deploy a commit only once CI passed on it. Waits while CI runs on the commit
# (at most WAIT_S, default 90 min: CI's own limit), then exits 0 if it succeeded, 1 if it
# failed or never ran. Uses the GitHub CLI (gh, on GitHub's runners; GH_TOKEN).
#   docker/delivery/wait-for-ci.sh COMMIT
set -euo pipefail
commit=${1:?usage: wait-for-ci.sh COMMIT}
deadline=$(( $(date +%s) + ${WAIT_S:-5400} ))
while :; do
  # The newest CI run for this commit: status, then conclusion.
  run=$(gh run list --workflow ci.yml --commit "$commit" --limit 1 --json status,conclusion \
        --jq '.[0] | "\(.status) \(.conclusion)"')
  case "$run" in
    "completed success") echo "CI passed on $commit"; exit 0 ;;
    completed*) echo "CI did not pass on $commit: ${run#completed }"; exit 1 ;;
    "" | "null null") echo "no CI run for $commit"; [ "$(date +%s)" -lt "$deadline" ] || exit 1 ;;
    *) echo "CI on $commit: $run; waiting" ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || { echo "CI did not finish on $commit in time"; exit 1; }
  sleep "${POLL_S:-30}"
done
