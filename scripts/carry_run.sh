#!/usr/bin/env bash
# Carry a training run's folder across machines through git, for runs longer than one session.
#
#   bash scripts/carry_run.sh save    runs/nin_bn3 checkpoints/nin_bn3   # before a session ends; commit DEST
#   bash scripts/carry_run.sh restore checkpoints/nin_bn3 runs/nin_bn3   # in the next session, then --resume
#
# Why: runs/ is not tracked (checkpoints are rewritten every 50 batches), and a new machine starts
# from a clean checkout, so a run that outlives its session would start over. The checkpoint (weights,
# momentum, batch-normalisation statistics: 7.8 MB for NIN) is over the repository's 5 MB limit per
# file, so `save` stores it in 4 MiB parts with its SHA-256; `restore` joins them, checks the digest
# and refuses to overwrite a newer checkpoint in the run folder.
set -euo pipefail
usage() { echo "usage: carry_run.sh save RUN DEST | restore SAVED RUN" >&2; exit 2; }
[[ $# -eq 3 ]] || usage
action="$1" src="$2" dst="$3"
files=(config.json train.log log.jsonl)  # the small files --resume and the reports read

case "$action" in
save)
    [[ -f "$src/checkpoint.npz" ]] || { echo "carry_run.sh: no checkpoint at $src/checkpoint.npz" >&2; exit 2; }
    mkdir -p "$dst"
    rm -f "$dst"/checkpoint.npz.part-*
    tmp="$(mktemp)"
    cp "$src/checkpoint.npz" "$tmp"  # a copy first: the trainer may replace the file while we split it
    (cd "$dst" && split -b 4M -d "$tmp" checkpoint.npz.part-)
    (cd "$(dirname "$tmp")" && sha256sum "$(basename "$tmp")") | cut -d' ' -f1 > "$dst/checkpoint.sha256"
    rm -f "$tmp"
    for f in "${files[@]}"; do [[ -f "$src/$f" ]] && cp "$src/$f" "$dst/"; done
    parts=("$dst"/checkpoint.npz.part-*)
    echo "carry_run.sh: saved $src into $dst (${#parts[@]} parts); commit $dst"
    ;;
restore)
    [[ -f "$src/checkpoint.sha256" ]] || { echo "carry_run.sh: no saved run at $src (checkpoint.sha256 missing)" >&2; exit 2; }
    mkdir -p "$dst"
    if [[ -f "$dst/checkpoint.npz" && "$dst/checkpoint.npz" -nt "$src/checkpoint.sha256" ]]; then
        echo "carry_run.sh: $dst/checkpoint.npz is newer than the saved run; not overwritten" >&2; exit 2
    fi
    cat "$src"/checkpoint.npz.part-* > "$dst/checkpoint.npz.tmp"
    got="$(sha256sum "$dst/checkpoint.npz.tmp" | cut -d' ' -f1)"
    if [[ "$got" != "$(cat "$src/checkpoint.sha256")" ]]; then
        rm -f "$dst/checkpoint.npz.tmp"
        echo "carry_run.sh: the joined checkpoint's SHA-256 differs from $src/checkpoint.sha256" >&2; exit 1
    fi
    mv "$dst/checkpoint.npz.tmp" "$dst/checkpoint.npz"
    for f in "${files[@]}"; do [[ -f "$src/$f" ]] && cp "$src/$f" "$dst/"; done
    echo "carry_run.sh: restored $dst; go on with: python -m perforated.train --out $dst --resume"
    ;;
*) usage ;;
esac
