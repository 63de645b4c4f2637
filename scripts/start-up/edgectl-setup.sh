# shellcheck shell=bash
# Sourced by start-up.sh: edgectl on PATH (a link into a bin folder) and the `local` context of an all-in-one
# cluster in edgectl's config file. Uses start-up.sh's PROJECT_DIR, say, warn and is_root.

EDGECTL=$PROJECT_DIR/dist/cluster-manager/cli/edgectl.js
# What the start-up summaries print about edgectl: where it is, or why it is not on PATH.
EDGECTL_LINE=""

# Where the link goes: START_UP_BIN_DIR, else /usr/local/bin for root, else ~/.local/bin (on PATH in Debian's
# default ~/.profile once it exists).
edgectl_bin_dir() {
  if [ -n "${START_UP_BIN_DIR:-}" ]; then
    echo "$START_UP_BIN_DIR"
  elif is_root; then
    echo /usr/local/bin
  else
    echo "${HOME:?HOME is not set}/.local/bin"
  fi
}

# A link that start-up.sh made: a symbolic link to this project's edgectl.
is_our_edgectl_link() {
  [ -L "$1" ] && [ "$(readlink "$1")" = "$EDGECTL" ]
}

# Links `edgectl` in the bin folder to this project's, unless something else has that name there (another
# program, or another checkout's link): that is never replaced. Sets EDGECTL_LINE.
link_edgectl() {
  local bin link
  bin=$(edgectl_bin_dir)
  link=$bin/edgectl
  if is_our_edgectl_link "$link"; then
    :
  elif [ -e "$link" ] || [ -L "$link" ]; then
    EDGECTL_LINE="$link is not this project's (it is $(describe_file "$link")): not replaced; run $EDGECTL, or remove it and start again"
    warn "$EDGECTL_LINE"
    return 0
  elif ! mkdir -p "$bin" 2>/dev/null || ! ln -s "$EDGECTL" "$link" 2>/dev/null; then
    EDGECTL_LINE="cannot link $link (no write access to $bin): run $EDGECTL"
    warn "$EDGECTL_LINE"
    return 0
  else
    say "linked $link -> $EDGECTL"
  fi
  case ":$PATH:" in
    *":$bin:"*) EDGECTL_LINE="edgectl ($link)" ;;
    *) EDGECTL_LINE="$link ($bin is not on your PATH: add it, e.g. export PATH=\"$bin:\$PATH\" in ~/.profile)" ;;
  esac
}

# Removes the link link_edgectl made, and nothing of the same name that it did not make.
remove_edgectl_link() {
  local link
  link=$(edgectl_bin_dir)/edgectl
  if is_our_edgectl_link "$link"; then
    rm -f "$link"
    say "removed the link $link"
  elif [ -e "$link" ] || [ -L "$link" ]; then
    say "left $link alone: it is not this project's ($(describe_file "$link"))"
  fi
}

describe_file() {
  if [ -L "$1" ]; then
    echo "a link to $(readlink "$1")"
  else
    echo "a file of its own"
  fi
}

# The `local` context (this machine's cluster manager, its CA and its token file) in edgectl's config file;
# made current when no context is. Prints where the file is; a failure only warns (edgectl still takes flags).
write_local_context() {
  local server=$1 ca_file=$2 token_file=$3 made
  if ! made=$(node "$EDGECTL" --server "$server" --ca-file "$ca_file" config set-context local \
    --token-file "$token_file" 2>&1); then
    warn "edgectl's context 'local' was not written: $made"
    return 0
  fi
  if ! node "$EDGECTL" config current-context >/dev/null 2>&1; then
    node "$EDGECTL" config use-context local >/dev/null 2>&1 || true
  fi
  echo "${made##* in }"
}
