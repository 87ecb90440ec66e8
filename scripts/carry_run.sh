#!/usr/bin/env bash
# Carry a run folder (training, greedy search, fine-tuning rows) across machines through git, for
# runs longer than one session.
#
#   bash scripts/carry_run.sh save    runs/nin_bn3 checkpoints/nin_bn3 [--exclude PATTERN ...] [--keep-npz PATTERN ...]
#   git add checkpoints/nin_bn3 && git commit ...                      # before the session ends
#   bash scripts/carry_run.sh restore checkpoints/nin_bn3 runs/nin_bn3 # in the next session
#   python -m perforated.train --out runs/nin_bn3 --resume             # (or the search, the script...)
#
# Why: runs/ is not tracked (checkpoints are rewritten every few minutes), and a new session starts
# from a clean checkout, so a run that outlives its session would start over. A training checkpoint
# (weights, momentum, batch-normalisation statistics: 7.8 MB for NIN) is over the repository's 5 MB
# limit per file, so `save` packs the folder into a gzip'd tar in 4 MiB parts with its SHA-256 (the
# --exclude patterns go to tar: e.g. 'weights.npz', which a resumed run writes again; with --keep-npz
# the .npz files whose path in RUN matches none of its bash patterns ('*' crosses '/') are left out:
# a folder of finished rows with one checkpoint in progress, --keep-npz '*/dense/checkpoint.npz'). `restore`
# joins the parts, checks the digest, and refuses to unpack over a folder that holds a file newer
# than the saved one (a run that went on since).
set -euo pipefail
usage() { echo "usage: carry_run.sh save RUN DEST [--exclude PATTERN ...] [--keep-npz PATTERN ...] | restore SAVED RUN" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
action="$1" src="$2" dst="$3"
shift 3
excludes=() keep_npz=()
while [[ $# -gt 0 ]]; do
    [[ "$action" == save && $# -ge 2 ]] || usage
    case "$1" in
    --exclude) excludes+=("--exclude=$2") ;;
    --keep-npz) keep_npz+=("$2") ;;
    *) usage ;;
    esac
    shift 2
done
# true when RUN-relative path $1 goes into the save: not a .npz, or no --keep-npz, or a match
wanted() {
    [[ "$1" != *.npz || ${#keep_npz[@]} -eq 0 ]] && return 0
    local pattern
    for pattern in "${keep_npz[@]}"; do
        # shellcheck disable=SC2053  # the pattern is meant to match as a pattern
        [[ "$1" == $pattern ]] && return 0
    done
    return 1
}

case "$action" in
save)
    [[ -d "$src" ]] || { echo "carry_run.sh: no run folder $src" >&2; exit 2; }
    mkdir -p "$dst"
    tmp="$(mktemp)" list="$(mktemp)"
    trap 'rm -f "$tmp" "$list"' EXIT
    # the folders, then the files wanted, as tar names them from inside RUN ("./sub/x")
    (cd "$src" && find . -mindepth 1 -type d -print0 && find . -type f ! -name '*.tmp' -print0) |
        while IFS= read -r -d '' name; do
            if wanted "${name#./}"; then printf '%s\0' "$name"; fi
        done > "$list"
    # the run may be writing its checkpoint now: files are replaced atomically (written as NAME.PID.tmp,
    # then renamed), so tar sees the old or the new file; the temporary ones are left out, and tar's
    # status 1 ("a file changed or vanished as it was read") is accepted: it is such a replacement
    set +e
    tar -C "$src" --exclude='*.tmp' "${excludes[@]}" --no-recursion --null -T "$list" -cf - | gzip -1 > "$tmp"
    status=("${PIPESTATUS[@]}")
    set -e
    if (( status[0] > 1 || status[1] != 0 )); then
        echo "carry_run.sh: packing $src failed (tar status ${status[0]}, gzip status ${status[1]})" >&2
        exit 1
    fi
    rm -f "$dst"/run.tar.gz.part-*
    (cd "$dst" && split -b 4M -d "$tmp" run.tar.gz.part-)
    sha256sum < "$tmp" | cut -d' ' -f1 > "$dst/run.sha256"
    tar -tzf "$tmp" | sed 's|^\./||' | grep -v '^$' | sort > "$dst/files.txt"
    parts=("$dst"/run.tar.gz.part-*)
    echo "carry_run.sh: saved $src into $dst (${#parts[@]} parts of at most 4 MiB); commit $dst"
    ;;
restore)
    [[ -f "$src/run.sha256" ]] || { echo "carry_run.sh: no saved run at $src (run.sha256 missing)" >&2; exit 2; }
    if [[ -d "$dst" ]] && [[ -n "$(find "$dst" -type f -newer "$src/run.sha256" -print -quit)" ]]; then
        echo "carry_run.sh: $dst holds files newer than the saved run; not overwritten" >&2; exit 2
    fi
    tmp="$(mktemp)"
    trap 'rm -f "$tmp"' EXIT
    cat "$src"/run.tar.gz.part-* > "$tmp"
    if [[ "$(sha256sum < "$tmp" | cut -d' ' -f1)" != "$(cat "$src/run.sha256")" ]]; then
        echo "carry_run.sh: the joined parts' SHA-256 differs from $src/run.sha256" >&2; exit 1
    fi
    mkdir -p "$dst"
    tar -C "$dst" -xzf "$tmp"
    echo "carry_run.sh: restored $dst; go on with the run's own resume (e.g. perforated.train --out $dst --resume)"
    ;;
*) usage ;;
esac
