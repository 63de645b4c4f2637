#!/usr/bin/env bash
# Starts the edge orchestrator on this machine, either as an all-in-one cluster (cluster manager with its
# embedded broker, plus a net manager and a node engine joined to it) or as a worker that joins an existing
# cluster (CLUSTER_MANAGER_URL and JOIN_TOKEN set). Checks prerequisites, installs and builds the project,
# and supervises what it starts, or installs it as systemd services (`install`; `uninstall` removes them).
# Run ./start-up.sh --help for the options.
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Logs and pid files; overridable so tests (or a second instance) never touch the project's own var/.
STATE_DIR=${START_UP_STATE_DIR:-$PROJECT_DIR/var}
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run
SUPERVISOR=$PROJECT_DIR/scripts/start-up/supervise.mjs
PROBE=$PROJECT_DIR/scripts/start-up/probe.mjs
# Started in this order, stopped in the reverse one.
PROGRAMS=(cluster-manager net-manager node-engine)
MIN_NODE_MAJOR=20
# How long the supervisor gives a program after SIGTERM before SIGKILL; stop waits a little longer.
STOP_GRACE_S=10
HEALTH_TIMEOUT_S=60
# The programs' logs under var/logs are rotated past this size; this many older ones are kept.
LOG_MAX_MB=${START_UP_LOG_MAX_MB:-10}
LOG_FILES=3
NODE_JOIN_TIMEOUT_S=30
EXAMPLE_JOB='{"name":"hello","image":"edge/busybox:latest","command":["sleep","3600"],"resources":{"cpus":0.5,"memoryMB":64}}'

# shellcheck source=scripts/start-up/systemd-install.sh
source "$PROJECT_DIR/scripts/start-up/systemd-install.sh"
# shellcheck source=scripts/start-up/edgectl-setup.sh
source "$PROJECT_DIR/scripts/start-up/edgectl-setup.sh"

ASSUME_YES=0
FOREGROUND=0
WITH_NET_MANAGER=1
COMMAND=""
MODE=""
# Programs this run started, so that a failed or interrupted start-up stops exactly those.
STARTED=()
# The log follower of --foreground (a background job ignores Ctrl-C, so it is ended explicitly).
TAIL_PID=""

say() { echo "[start-up] $*"; }
warn() { echo "[start-up] warning: $*" >&2; }
die() {
  local code=$1
  shift
  echo "[start-up] error: $*" >&2
  exit "$code"
}

usage() {
  echo "usage: ./start-up.sh <amd64|arm64|arm-7> [-y] [--foreground] [--no-net-manager] | stop | status |"
  echo "       install [-y] [--no-net-manager] | uninstall [-y] | --help"
}

print_help() {
  usage
  cat <<'EOF'

  <arch>            check prerequisites, install and build the project, then start it:
                    - CLUSTER_MANAGER_URL and JOIN_TOKEN set: a worker (net manager + node engine) that joins
                      that cluster;
                    - neither set: an all-in-one cluster on this machine (cluster manager, net manager and a
                      node engine joined to it).
  stop              stop what start-up.sh started (by the pid files it wrote, and only those)
  status            show what runs (exit 0 if something does, 3 if nothing)
  install           as root, on a machine systemd runs: the same checks, install and build, and the same
                    choice of all-in-one or worker, then a systemd unit per program (edge-cluster-manager,
                    edge-net-manager, edge-node-engine), started now and at every boot, restarted whenever
                    it exits. Settings in /etc/edge-orchestrator/<program>.env (the variables set now, kept
                    by a later install), data in /var/lib/edge-orchestrator/, logs in the journal
                    (journalctl -u edge-node-engine). Run it again after a git pull to upgrade.
  uninstall         as root: stop and remove the units and their settings, the bridge, TUN, veths and
                    iptables chain the net manager made, the edgectl link, and (asked first; -y: without
                    asking) the data and this node's containers. Safe to run again.
  -y, --yes         do not ask: install missing prerequisites (Docker, a C++ toolchain) right away; with
                    uninstall, remove the data too
  --foreground      stay attached and show the logs; Ctrl-C stops everything it started
  --no-net-manager  do not start the net manager (the node runs with the overlay off)
  -h, --help        this help

Programs run under a supervisor that restarts them with backoff (1 s doubling to 30 s). Logs go to
var/logs/<program>.log (the previous run's in <program>.log.1; rotated past START_UP_LOG_MAX_MB, 10 MiB,
keeping three older ones), pids to var/run/<program>.pid (the supervisor) and var/run/<program>.child.pid
(the program). START_UP_STATE_DIR moves var/logs and var/run elsewhere. Every program reads its own
environment variables (CM_HTTP_PORT, CM_DATA_DIR, NE_PORT, NE_DATA_DIR, NM_DATA_DIR, ...; see the README).

After a start or an install, edgectl is on PATH: a link in /usr/local/bin (root) or ~/.local/bin
(START_UP_BIN_DIR elsewhere; a file of that name that is not such a link is never replaced), and an all-in-one
cluster writes edgectl's context "local" (its address, CA and token file) into ~/.config/edgectl/config.json
(EDGECTL_CONFIG), made the current one when none is. START_UP_UNIT_DIR, START_UP_CONFIG_DIR and
START_UP_DATA_DIR move the units, settings and data of an install elsewhere.

ADVERTISE_ADDRESS is the IPv4 address other machines reach this one at. By default it is the address of the
interface holding the default route. An all-in-one cluster prints it in the join command for other workers;
the net manager announces it as this worker's overlay endpoint (NM_PUBLIC_IP, when set, wins there).
EOF
}

# ---------------------------------------------------------------------------------------------------------
# Arguments, architecture, mode
# ---------------------------------------------------------------------------------------------------------

parse_args() {
  local arg
  for arg in "$@"; do
    case $arg in
      -y | --yes) ASSUME_YES=1 ;;
      --foreground) FOREGROUND=1 ;;
      --no-net-manager) WITH_NET_MANAGER=0 ;;
      -h | --help)
        print_help
        exit 0
        ;;
      amd64 | arm64 | arm-7 | stop | status | install | uninstall)
        [ -z "$COMMAND" ] || usage_error "one architecture or command, not both '$COMMAND' and '$arg'"
        COMMAND=$arg
        ;;
      *) usage_error "unknown argument '$arg'" ;;
    esac
  done
  [ -n "$COMMAND" ] ||
    usage_error "an architecture (amd64, arm64, arm-7) or a command (stop, status, install, uninstall) is needed"
  if [ "$FOREGROUND" -eq 1 ] && { [ "$COMMAND" = install ] || [ "$COMMAND" = uninstall ]; }; then
    usage_error "--foreground is for a start, not for $COMMAND (the installed services log to the journal)"
  fi
}

usage_error() {
  echo "[start-up] error: $*" >&2
  usage >&2
  exit 2
}

# The start-up names for `uname -m`; empty for machines we do not support.
machine_arch() {
  case $(uname -m) in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    # armv8l: a 32-bit ARM userland on a 64-bit kernel runs armv7 binaries.
    armv7l | armv8l) echo arm-7 ;;
    *) echo "" ;;
  esac
}

check_arch() {
  local wanted=$1 actual
  actual=$(machine_arch)
  if [ "$actual" != "$wanted" ]; then
    die 2 "this machine is $(uname -m) (${actual:-not supported}), not $wanted; run ./start-up.sh ${actual:-<arch>}"
  fi
}

# Both join variables set: join mode; neither: all-in-one; one alone is almost surely a mistake.
detect_mode() {
  local url=${CLUSTER_MANAGER_URL:-} token=${JOIN_TOKEN:-}
  if [ -n "$url" ] && [ -n "$token" ]; then
    MODE="join"
  elif [ -z "$url" ] && [ -z "$token" ]; then
    MODE=all-in-one
  elif [ -n "$url" ]; then
    die 2 "CLUSTER_MANAGER_URL is set but JOIN_TOKEN is not: set both to join a cluster, or neither for an all-in-one cluster"
  else
    die 2 "JOIN_TOKEN is set but CLUSTER_MANAGER_URL is not: set both to join a cluster, or neither for an all-in-one cluster"
  fi
}

# An absolute path for a path the programs take relative to the project directory.
absolute_path() {
  case $1 in
    /*) echo "$1" ;;
    *) echo "$PROJECT_DIR/$1" ;;
  esac
}

# A dotted quad other machines could send to: not loopback, unspecified, multicast or broadcast.
is_peer_address() {
  local ip=$1 first
  [[ $ip =~ ^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$ ]] || return 1
  first=${ip%%.*}
  [ "$first" -ne 127 ] && [ "$first" -ne 0 ] && { [ "$first" -lt 224 ] || [ "$first" -gt 239 ]; } &&
    [ "$ip" != 255.255.255.255 ]
}

check_advertise_address() {
  [ -z "${ADVERTISE_ADDRESS:-}" ] && return 0
  is_peer_address "$ADVERTISE_ADDRESS" ||
    die 2 "ADVERTISE_ADDRESS=$ADVERTISE_ADDRESS is not an IPv4 address other machines can reach (loopback, multicast and the like are not)"
}

# ---------------------------------------------------------------------------------------------------------
# Asking, root, apt
# ---------------------------------------------------------------------------------------------------------

has_terminal() { [ -t 0 ]; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Yes with -y; asks when there is a terminal; no (never blocks) when there is none.
confirm() {
  ask "$1" yes
}

# A yes/no question: yes with -y; no (never blocking) without a terminal; else the answer, or `default` (yes or
# no) for an empty one. A question whose yes destroys something defaults to no (see confirm_removal).
ask() {
  local question=$1 default=$2 answer hint="[Y/n]"
  [ "$default" = no ] && hint="[y/N]"
  [ "$ASSUME_YES" -eq 1 ] && return 0
  has_terminal || return 1
  read -r -p "[start-up] $question $hint " answer || return 1
  case ${answer:-$default} in
    y | Y | yes | YES) return 0 ;;
    *) return 1 ;;
  esac
}

# Runs a command as root: directly when we are, else through sudo, which asks for the password on a terminal
# and fails at once (-n) without one instead of blocking.
as_root() {
  if is_root; then
    "$@"
  elif ! command -v sudo >/dev/null 2>&1; then
    echo "[start-up] error: this needs root and sudo is not installed: run as root: $*" >&2
    return 1
  elif has_terminal; then
    sudo "$@"
  else
    sudo -n "$@"
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || {
    echo "[start-up] error: apt-get not found; install $* with your package manager" >&2
    return 1
  }
  say "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ---------------------------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------------------------

# Never installs Debian's nodejs: Debian 12 ships Node 18, too old for this project.
require_node() {
  local major=""
  if command -v node >/dev/null 2>&1; then
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo "")
  fi
  if [ -n "$major" ] && [ "$major" -ge "$MIN_NODE_MAJOR" ] && command -v npm >/dev/null 2>&1; then
    say "Node.js $(node --version) and npm $(npm --version)"
    return 0
  fi
  if [ -z "$major" ]; then
    echo "[start-up] error: Node.js >= $MIN_NODE_MAJOR is needed and none was found." >&2
  elif [ "$major" -lt "$MIN_NODE_MAJOR" ]; then
    echo "[start-up] error: Node.js >= $MIN_NODE_MAJOR is needed; this machine has $(node --version)." >&2
  else
    echo "[start-up] error: npm was not found next to Node.js $(node --version)." >&2
  fi
  local tarball_arch
  case $(machine_arch) in
    amd64) tarball_arch=x64 ;;
    arm64) tarball_arch=arm64 ;;
    *) tarball_arch=armv7l ;;
  esac
  cat >&2 <<EOF
  Debian's own nodejs package is Node 18: do not use it. Install Node.js 22 LTS (with npm) either
  - from NodeSource (as root):
      curl -fsSL https://deb.nodesource.com/setup_22.x | bash -
      apt-get install -y nodejs
  - or from the official tarball (https://nodejs.org/en/download):
      curl -fsSLO https://nodejs.org/dist/latest-v22.x/node-v22.<x>.<y>-linux-$tarball_arch.tar.xz
      tar -xJf node-v22.*-linux-$tarball_arch.tar.xz -C /usr/local --strip-components=1
  then run this script again.
EOF
  exit 1
}

docker_works() { docker info >/dev/null 2>&1; }

# The Docker engine is shared with whatever else runs on this machine: start-up.sh may start it, but stop
# never stops it.
start_dockerd() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    say "starting the Docker engine (systemctl start docker)"
    systemctl start docker || true
  fi
  if ! docker_works; then
    say "starting dockerd in the background (log: $LOG_DIR/dockerd.log)"
    mkdir -p "$LOG_DIR"
    (setsid dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &)
  fi
  local _
  for _ in $(seq 1 60); do
    docker_works && return 0
    sleep 0.5
  done
  tail -n 20 "$LOG_DIR/dockerd.log" >&2 2>/dev/null || true
  die 1 "the Docker engine did not come up within 30 s; see $LOG_DIR/dockerd.log"
}

install_docker() {
  if ! confirm "Docker is not installed. Install Debian's docker.io with apt-get?"; then
    if [ "$ASSUME_YES" -eq 0 ] && ! has_terminal; then
      die 1 "missing: a Docker engine. Install it (apt-get install docker.io) or run again with -y to let this script do it"
    fi
    die 1 "missing: a Docker engine. Install it (apt-get install docker.io) and run this script again"
  fi
  apt_install docker.io || die 1 "installing docker.io failed"
}

require_docker() {
  if docker_works; then
    say "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '(version unknown)')"
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    install_docker
    docker_works && return 0
  fi
  if [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ] && ! is_root; then
    die 1 "the Docker engine runs but $(id -un) may not use it: run as root, or add yourself to the docker group (sudo usermod -aG docker $(id -un)) and log in again"
  fi
  if is_root; then
    start_dockerd
  else
    die 1 "the Docker engine is installed but not running: start it (sudo systemctl start docker) and run this script again"
  fi
}

missing_build_tools() {
  local missing=()
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  echo "${missing[*]}"
}

# Native modules (better-sqlite3, the net manager's TUN addon) compile from source where no prebuilt binary
# can be downloaded. Without a toolchain npm install may still succeed, so this only warns when it cannot install.
ensure_build_tools() {
  local missing
  missing=$(missing_build_tools)
  [ -z "$missing" ] && return 0
  if confirm "Native modules need a C++ toolchain ($missing missing). Install build-essential and python3 with apt-get?"; then
    apt_install build-essential python3 || warn "installing the toolchain failed; npm install may fail to compile native modules"
  else
    warn "missing $missing: npm install fails if a native module has no prebuilt binary (install build-essential python3, or use -y)"
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Install and build
# ---------------------------------------------------------------------------------------------------------

install_dependencies() {
  # npm writes node_modules/.package-lock.json at the end of every install: older than the lock file means
  # the lock file changed since.
  if [ -d node_modules ] && [ -f node_modules/.package-lock.json ] &&
    [ ! package-lock.json -nt node_modules/.package-lock.json ]; then
    say "dependencies are up to date"
    return 0
  fi
  ensure_build_tools
  say "installing dependencies (native modules may take a few minutes to compile)"
  # `npm install --no-save` follows the lock and leaves it as is, and keeps what is installed already (`npm ci`,
  # which CI uses, would remove node_modules first).
  npm install --no-save --no-audit --no-fund ||
    die 1 "npm install failed (see above); a missing C++ toolchain (build-essential python3) is the usual cause"
}

# Sources that go into dist/; a build stamp newer than all of them means dist/ is current.
build_inputs() {
  local input
  for input in shared cluster-manager node-engine net-manager fleet-sim tsconfig.json package.json package-lock.json \
    scripts/copy-assets.mjs scripts/mark-bins-executable.mjs; do
    [ -e "$input" ] && echo "$input"
  done
  return 0
}

build_project() {
  local stamp=dist/.build-stamp inputs=() newer=""
  mapfile -t inputs < <(build_inputs)
  if [ -f "$stamp" ]; then
    newer=$(find "${inputs[@]}" -path net-manager/native/build -prune -o -newer "$stamp" -print -quit)
    if [ -z "$newer" ]; then
      say "build is up to date"
      return 0
    fi
  fi
  say "building (npm run build)"
  npm run build || die 1 "the build failed (see above)"
  touch "$stamp"
}

# The net manager's TUN addon is built by npm install; a checkout whose dependencies were installed before
# the addon existed (or changed) builds it here. Its sources only: node-gyp touches build/ after the addon.
build_native_addon() {
  local addon=net-manager/native/build/Release/edge_tun.node
  if [ -f "$addon" ] && [ -z "$(find net-manager/native -maxdepth 1 -type f -newer "$addon" -print -quit)" ]; then
    return 0
  fi
  say "building the net manager's TUN addon (npm run build:native)"
  npm run build:native || warn "the TUN addon did not build: the net manager cannot start (the node runs with the overlay off)"
}

require_built() {
  local program
  for program in "$@"; do
    [ -f "dist/$program/main.js" ] || die 1 "dist/$program/main.js is missing after the build: $program is not there yet"
  done
}

# ---------------------------------------------------------------------------------------------------------
# Processes: pid files, supervisors, stop
# ---------------------------------------------------------------------------------------------------------

supervisor_pid_file() { echo "$RUN_DIR/$1.pid"; }
program_pid_file() { echo "$RUN_DIR/$1.child.pid"; }

read_pid() {
  local pid=""
  if [ -f "$1" ]; then
    read -r pid <"$1" 2>/dev/null || true
  fi
  [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
  return 0
}

# Alive and not a zombie (a zombie's parent may never reap it, e.g. a bare init in a container).
pid_alive() {
  local state
  state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# True when pid is alive and its command line contains every given string: a pid file left by a crash may
# name a pid that now belongs to some other process, which must never be signalled.
pid_runs() {
  local pid=$1 cmdline
  shift
  pid_alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  local part
  for part in "$@"; do
    [[ $cmdline == *"$part"* ]] || return 1
  done
}

supervisor_of() {
  local pid
  pid=$(read_pid "$(supervisor_pid_file "$1")")
  [ -n "$pid" ] && pid_runs "$pid" supervise.mjs "--name $1 " && echo "$pid"
  return 0
}

program_of() {
  local pid
  pid=$(read_pid "$(program_pid_file "$1")")
  [ -n "$pid" ] && pid_runs "$pid" "dist/$1/main.js" && echo "$pid"
  return 0
}

wait_until_gone() {
  local pid=$1 timeout_s=$2 i
  for ((i = 0; i < timeout_s * 5; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.2
  done
  return 1
}

# The node engine runs on small workers: node-engine/node-options holds the V8 flags and environment that keep
# its idle memory low (the tests start it with the same file, and the installed units are written from it). Sets
# NODE_FLAGS (--flags for node) and NODE_TUNING (NAME=value) for `program`; both empty for the others.
read_node_options() {
  local program=$1 line
  NODE_FLAGS=()
  NODE_TUNING=()
  [ "$program" = node-engine ] || return 0
  while IFS= read -r line; do
    case $line in
      --*) NODE_FLAGS+=("$line") ;;
      [A-Za-z_]*=*) NODE_TUNING+=("$line") ;;
    esac
  done <"$PROJECT_DIR/node-engine/node-options"
}

# Starts `program` under its supervisor, detached into its own session so that it outlives this script and
# a closed terminal. Extra arguments are VAR=value pairs for the program's environment.
start_program() {
  local program=$1
  shift
  local log=$LOG_DIR/$program.log pid_file
  pid_file=$(supervisor_pid_file "$program")
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  rm -f "$pid_file" "$(program_pid_file "$program")"
  say "starting $program (log: $log)"
  read_node_options "$program"
  # The supervisor keeps the previous run's log as $log.1 and rotates it by size (it only appends its own
  # start-up errors to the log it is told about: SC2094 does not apply).
  # shellcheck disable=SC2094
  env ${NODE_TUNING[@]+"${NODE_TUNING[@]}"} "$@" setsid node "$SUPERVISOR" --name "$program" --pid-file "$pid_file" \
    --child-pid-file "$(program_pid_file "$program")" --log "$log" --grace-ms "$((STOP_GRACE_S * 1000))" \
    --log-max-bytes "$((LOG_MAX_MB * 1024 * 1024))" --log-files "$LOG_FILES" \
    -- "$(command -v node)" ${NODE_FLAGS[@]+"${NODE_FLAGS[@]}"} "$PROJECT_DIR/dist/$program/main.js" </dev/null >>"$log" 2>&1 &
  STARTED+=("$program")
  # The supervisor writes its own pid file (setsid may fork, so $! is not always its pid).
  local i
  for ((i = 0; i < 50; i++)); do
    [ -n "$(supervisor_of "$program")" ] && return 0
    sleep 0.1
  done
  tail -n 20 "$log" >&2 2>/dev/null || true
  die 1 "the supervisor of $program did not start; see $log"
}

# Ends one program: SIGTERM to its supervisor (which stops the program), then to a program left without a
# supervisor (its supervisor was killed). Prints what it stopped; false when nothing ran.
stop_program() {
  local program=$1 supervisor child stopped=1
  supervisor=$(supervisor_of "$program")
  if [ -n "$supervisor" ]; then
    say "stopping $program (supervisor pid $supervisor)"
    kill -TERM "$supervisor" 2>/dev/null || true
    if ! wait_until_gone "$supervisor" $((STOP_GRACE_S + 5)); then
      warn "$program's supervisor did not exit; sending SIGKILL"
      kill -KILL "$supervisor" 2>/dev/null || true
    fi
    stopped=0
  fi
  child=$(program_of "$program")
  if [ -n "$child" ]; then
    say "stopping $program (pid $child)"
    kill -TERM "$child" 2>/dev/null || true
    if ! wait_until_gone "$child" "$STOP_GRACE_S"; then
      warn "$program did not exit; sending SIGKILL"
      kill -KILL "$child" 2>/dev/null || true
    fi
    stopped=0
  fi
  rm -f "$(supervisor_pid_file "$program")" "$(program_pid_file "$program")"
  return "$stopped"
}

stop_all() {
  local i any=1
  for ((i = ${#PROGRAMS[@]} - 1; i >= 0; i--)); do
    stop_program "${PROGRAMS[i]}" && any=0
  done
  if [ "$any" -eq 0 ]; then
    say "stopped"
  else
    say "nothing running"
  fi
}

# Stops what this run started (in reverse order), after a failure or an interrupt.
stop_started() {
  local i
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_program "${STARTED[i]}" || true
  done
  STARTED=()
}

on_interrupt() {
  trap - INT TERM HUP
  [ -z "$TAIL_PID" ] || kill "$TAIL_PID" 2>/dev/null || true
  echo
  say "interrupted: stopping what was started"
  stop_started
  exit 130
}

show_status() {
  local program supervisor child state any=1
  for program in "${PROGRAMS[@]}"; do
    supervisor=$(supervisor_of "$program")
    child=$(program_of "$program")
    if [ -f "$(unit_file "$program")" ] && systemd_runs; then
      # Installed: systemd's word (active, activating, failed, inactive).
      state=$(systemctl is-active "$(unit_name "$program")" 2>/dev/null || true)
      [ "$state" != active ] || any=0
      echo "$program: ${state:-unknown} (systemd unit $(unit_name "$program"); journalctl -u $(unit_name "$program"))"
    elif [ -n "$supervisor" ] || [ -n "$child" ]; then
      any=0
      echo "$program: running (supervisor pid ${supervisor:-none}, program pid ${child:-restarting}), log $LOG_DIR/$program.log"
    else
      echo "$program: not running"
    fi
  done
  # LSB convention for status: 3 means not running.
  [ "$any" -eq 0 ] || return 3
}

any_running() {
  local program
  for program in "${PROGRAMS[@]}"; do
    [ -n "$(supervisor_of "$program")" ] && return 0
    [ -n "$(program_of "$program")" ] && return 0
  done
  return 1
}

# ---------------------------------------------------------------------------------------------------------
# Starting the cluster
# ---------------------------------------------------------------------------------------------------------

# Another process on one of our ports would answer our health checks and hide the real failure.
require_port_free() {
  local port=$1 what=$2
  if node "$PROBE" listening "$port"; then
    die 1 "port $port ($what) is already in use on this machine; stop that or choose another port"
  fi
}

wait_for_health() {
  local url=$1 program=$2 ca_file=${3:-} i
  say "waiting for $program to answer $url"
  for ((i = 0; i < HEALTH_TIMEOUT_S; i++)); do
    # The cluster CA appears with the cluster manager's first start: verified against it once it is there.
    NODE_EXTRA_CA_CERTS=$ca_file node "$PROBE" get "$url" >/dev/null 2>&1 && return 0
    if [ -z "$(supervisor_of "$program")" ]; then
      tail -n 20 "$LOG_DIR/$program.log" >&2 2>/dev/null || true
      fail_start "$program exited and its supervisor gave up; see $LOG_DIR/$program.log"
    fi
    sleep 1
  done
  tail -n 20 "$LOG_DIR/$program.log" >&2 2>/dev/null || true
  fail_start "$program did not answer $url within $HEALTH_TIMEOUT_S s; see $LOG_DIR/$program.log"
}

fail_start() {
  echo "[start-up] error: $*" >&2
  stop_started
  exit 1
}

# The token the program was given, else the one it generated and kept in its data dir.
read_token() {
  local given=$1 file=$2 i token=""
  if [ -n "$given" ]; then
    echo "$given"
    return 0
  fi
  for ((i = 0; i < 50; i++)); do
    [ -s "$file" ] && read -r token <"$file" && [ -n "$token" ] && break
    sleep 0.1
  done
  [ -n "$token" ] || fail_start "no token in $file"
  echo "$token"
}

# The net manager needs root (TUN device, links, routes) and its addon; without them the node runs with the
# overlay off. It starts before the node engine, which then registers for an overlay subnet at once.
start_net_manager_if_present() {
  if [ "$WITH_NET_MANAGER" -eq 0 ]; then
    say "net manager not started (--no-net-manager): the node runs with the overlay off"
  elif [ ! -f dist/net-manager/main.js ] || [ ! -f net-manager/native/build/Release/edge_tun.node ]; then
    warn "the net manager is not built (dist/net-manager/main.js or its TUN addon missing): the node runs with the overlay off"
  elif ! is_root; then
    warn "the net manager needs root: not started; the node runs with the overlay off"
  else
    start_program net-manager "$@"
    wait_for_net_manager
  fi
}

# Until its local API socket answers (a node engine started earlier registers again once it appears).
wait_for_net_manager() {
  local socket=${NM_DATA_DIR:-var/net-manager}/net-manager.sock i
  for ((i = 0; i < 100; i++)); do
    [ -S "$socket" ] && return 0
    sleep 0.1
  done
  warn "the net manager has not opened $socket within 10 s; see $LOG_DIR/net-manager.log"
}

# With NM_DATA_DIR moved, the node engine must look for the net manager's socket there too.
net_manager_socket_env() {
  if [ -z "${NE_NET_MANAGER_SOCKET:-}" ] && [ -n "${NM_DATA_DIR:-}" ]; then
    echo "NE_NET_MANAGER_SOCKET=$NM_DATA_DIR/net-manager.sock"
  fi
  return 0
}

wait_for_node() {
  local base_url=$1 api_token=$2 name=$3 ca_file=$4 i online
  say "waiting for node $name to join"
  for ((i = 0; i < NODE_JOIN_TIMEOUT_S; i++)); do
    # The token by environment: never on a command line.
    if online=$(PROBE_TOKEN=$api_token NODE_EXTRA_CA_CERTS=$ca_file node "$PROBE" node-online "$base_url" "$name"); then
      say "node $online is online"
      return 0
    fi
    sleep 1
  done
  warn "node $name did not show up as online within $NODE_JOIN_TIMEOUT_S s; see $LOG_DIR/node-engine.log"
}

# The address of the interface holding the default route (its src, the source towards its gateway, or the
# device's first address); empty when there is none. Route lookups only: nothing is sent.
default_route_address() {
  command -v ip >/dev/null 2>&1 || return 0
  local route gateway device address=""
  route=$(ip -4 route show default 2>/dev/null | head -n 1)
  [ -n "$route" ] || return 0
  address=$(sed -n 's/.* src \([0-9.]*\).*/\1/p' <<<"$route")
  gateway=$(sed -n 's/.* via \([0-9.]*\).*/\1/p' <<<"$route")
  device=$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"$route")
  if [ -z "$address" ] && [ -n "$gateway" ]; then
    address=$(ip -4 route get "$gateway" 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)
  fi
  if [ -z "$address" ] && [ -n "$device" ]; then
    address=$(ip -4 -o addr show dev "$device" scope global 2>/dev/null | sed -n 's/.* inet \([0-9.]*\).*/\1/p' | head -n 1)
  fi
  echo "$address"
}

# The address other machines reach this one at: ADVERTISE_ADDRESS, else the default route's; empty if neither.
advertise_address() {
  local address=${ADVERTISE_ADDRESS:-}
  [ -n "$address" ] || address=$(default_route_address)
  if [ -n "$address" ] && is_peer_address "$address"; then
    echo "$address"
  fi
  return 0
}

# What the net manager announces as this worker's overlay endpoint: NM_PUBLIC_IP (read by the net manager
# itself) wins; else the advertised address.
net_manager_address_env() {
  local address=$1
  if [ -z "${NM_PUBLIC_IP:-}" ] && [ -n "$address" ]; then
    echo "NM_PUBLIC_IP=$address"
  fi
  return 0
}

# Whether the cluster manager runs without TLS (CM_INSECURE=1 or true): everything in clear text.
insecure_mode() {
  case ${CM_INSECURE:-} in
    1 | true) return 0 ;;
  esac
  return 1
}

start_all_in_one() {
  local http_port=${CM_HTTP_PORT:-10100} data_dir=${CM_DATA_DIR:-var/cluster-manager}
  local local_url join_token api_token node_name socket_env address address_env scheme=https ca_file
  ca_file=$data_dir/tls/ca.pem
  if insecure_mode; then
    scheme=http
    ca_file=""
    warn "CM_INSECURE is set: TLS is off, tokens, node secrets and job env cross the network in clear text"
  fi
  local_url=$scheme://127.0.0.1:$http_port
  address=$(advertise_address)
  if [ -z "$address" ]; then
    warn "no address other machines can reach this one at (no default route): other workers cannot join or reach its containers; set ADVERTISE_ADDRESS"
  fi
  address_env=$(net_manager_address_env "$address")
  require_port_free "$http_port" "cluster manager HTTP, CM_HTTP_PORT"
  [ -n "${CM_MQTT_URL:-}" ] || require_port_free "${CM_MQTT_PORT:-10003}" "embedded MQTT broker, CM_MQTT_PORT"
  require_port_free "${NE_PORT:-3000}" "node engine local API, NE_PORT"

  start_program cluster-manager
  wait_for_health "$local_url/api/health" cluster-manager "$ca_file"
  # The token for nodes, as the cluster manager wrote it: it pins the cluster CA (E10<fingerprint>::<secret>).
  join_token=$(read_token "" "$data_dir/node-join-token")
  api_token=$(read_token "${CM_API_TOKEN:-}" "$data_dir/api-token")

  start_net_manager_if_present "CLUSTER_MANAGER_URL=$local_url" ${address_env:+"$address_env"}
  socket_env=$(net_manager_socket_env)
  start_program node-engine "CLUSTER_MANAGER_URL=$local_url" "JOIN_TOKEN=$join_token" ${socket_env:+"$socket_env"}
  node_name=${NODE_NAME:-$(hostname)}
  wait_for_node "$local_url" "$api_token" "$node_name" "$ca_file"
  link_edgectl
  local token_file="" context_file
  [ -n "${CM_API_TOKEN:-}" ] || token_file=$(absolute_path "$data_dir/api-token")
  context_file=$(write_local_context "$local_url" "${ca_file:+$(absolute_path "$ca_file")}" "$token_file")
  print_all_in_one_summary "$http_port" "$api_token" "$join_token" "${address:-<this-machine>}" "$scheme" "$ca_file" \
    "$context_file"
}

# Which address the net manager announces, for the summaries (nothing when it does not run).
overlay_endpoint_line() {
  local address=$1
  [ -n "$(supervisor_of net-manager)" ] || return 0
  local announced=${NM_PUBLIC_IP:-$address}
  if [ -n "$announced" ]; then
    echo "  Overlay:    other workers send this machine's overlay traffic to $announced:${NM_UDP_PORT:-50103}"
    echo "              (set ADVERTISE_ADDRESS, or NM_PUBLIC_IP for the overlay alone, to change it)"
  fi
  return 0
}

print_all_in_one_summary() {
  local http_port=$1 api_token=$2 join_token=$3 address=$4 scheme=$5 ca_file=$6 context_file=$7 cacert="" trust_line
  local edgectl_line=$EDGECTL_LINE
  [ -z "$context_file" ] || edgectl_line+=", context \"local\" in $context_file"
  if [ -n "$ca_file" ]; then
    cacert="--cacert $ca_file "
    trust_line="  Cluster CA: $ca_file (a browser warns until you import it, or accept the certificate once)"
  else
    trust_line="  TLS is OFF (CM_INSECURE): everything crosses the network in clear text"
  fi
  cat <<EOF

[start-up] the all-in-one cluster is running.
  Dashboard:  $scheme://$address:$http_port/   (and $scheme://127.0.0.1:$http_port/ on this machine)
$trust_line
  API token:  $api_token
  edgectl:    $edgectl_line
    edgectl nodes
    echo '$EXAMPLE_JOB' | edgectl deploy -f -
  Deploy the example job with the raw API:
    curl -sS ${cacert}-X POST $scheme://127.0.0.1:$http_port/api/jobs \\
      -H 'Authorization: Bearer $api_token' -H 'Content-Type: application/json' \\
      -d '$EXAMPLE_JOB'
  (edge/busybox:latest must exist in the local Docker engine: no registry is reachable here; build it with
   scripts/test-env.sh.$(docker image inspect edge/busybox:latest >/dev/null 2>&1 || echo ' It is missing right now.'))
  List the nodes:
    curl -sS ${cacert}-H 'Authorization: Bearer $api_token' $scheme://127.0.0.1:$http_port/api/nodes
  Join another worker (the token pins this cluster's CA: the worker checks it on first contact):
    CLUSTER_MANAGER_URL=$scheme://$address:$http_port JOIN_TOKEN=$join_token ./start-up.sh <arch>
$(overlay_endpoint_line "$address")
  Logs: $LOG_DIR/   Status: ./start-up.sh status   Stop: ./start-up.sh stop
EOF
}

start_join() {
  local socket_env
  require_port_free "${NE_PORT:-3000}" "node engine local API, NE_PORT"
  # Only a hint: the node engine keeps retrying until the cluster manager answers.
  if ! node "$PROBE" reachable "${CLUSTER_MANAGER_URL%/}/api/health"; then
    warn "the cluster manager at $CLUSTER_MANAGER_URL does not answer right now; the node engine keeps retrying"
  fi
  # A worker's net manager announces the address that routes to the broker unless told otherwise.
  local address_env
  address_env=$(net_manager_address_env "${ADVERTISE_ADDRESS:-}")
  start_net_manager_if_present ${address_env:+"$address_env"}
  socket_env=$(net_manager_socket_env)
  # CLUSTER_MANAGER_URL and JOIN_TOKEN reach the node engine through the environment.
  start_program node-engine ${socket_env:+"$socket_env"}
  link_edgectl
  cat <<EOF

[start-up] this worker is running and joins the cluster at $CLUSTER_MANAGER_URL.
  edgectl:    $EDGECTL_LINE (edgectl config set-context to reach the cluster manager)
$(overlay_endpoint_line "${ADVERTISE_ADDRESS:-}")
  Logs: $LOG_DIR/   Status: ./start-up.sh status   Stop: ./start-up.sh stop
EOF
}

# Stays attached: shows the logs and stops everything on Ctrl-C (or when the terminal goes away).
stay_in_foreground() {
  local logs=() program
  for program in "${STARTED[@]}"; do logs+=("$LOG_DIR/$program.log"); done
  say "running in the foreground; Ctrl-C stops everything"
  tail -n 0 -F "${logs[@]}" 2>/dev/null &
  TAIL_PID=$!
  while any_running; do
    sleep 1 &
    wait $! || true
  done
  kill "$TAIL_PID" 2>/dev/null || true
  say "everything has stopped"
}

main() {
  parse_args "$@"
  [[ $LOG_MAX_MB =~ ^[1-9][0-9]{0,5}$ ]] || usage_error "START_UP_LOG_MAX_MB=$LOG_MAX_MB is not a whole number of MiB (1 or more)"
  cd "$PROJECT_DIR"
  case $COMMAND in
    stop)
      stop_all
      return 0
      ;;
    status)
      show_status || exit $?
      return 0
      ;;
    uninstall)
      uninstall
      return 0
      ;;
    install)
      [ -n "$(machine_arch)" ] || die 2 "this machine is $(uname -m): not supported (amd64, arm64, arm-7 are)"
      require_root install
      require_systemd
      keep_installed_worker
      import_installed_settings
      ;;
    *)
      check_arch "$COMMAND"
      if installed; then
        die 1 "the edge orchestrator is installed as systemd services here (systemctl status edge-node-engine): ./start-up.sh uninstall first to start it this way"
      fi
      ;;
  esac
  detect_mode
  check_advertise_address
  if any_running; then
    show_status
    if [ "$COMMAND" = install ]; then
      die 1 "start-up.sh runs the programs itself now: stop them first (./start-up.sh stop); the services take their place"
    fi
    die 1 "already running; stop it first with ./start-up.sh stop"
  fi
  if [ "$COMMAND" = install ]; then
    say "installing the edge orchestrator ($MODE) as systemd services"
  else
    say "starting the edge orchestrator ($MODE) on $COMMAND"
  fi
  require_node
  require_docker
  install_dependencies
  build_project
  build_native_addon
  if [ "$MODE" = all-in-one ]; then
    require_built cluster-manager node-engine
  else
    require_built node-engine
  fi
  if [ "$COMMAND" = install ]; then
    install_services
    return 0
  fi
  trap on_interrupt INT TERM HUP
  if [ "$MODE" = all-in-one ]; then
    start_all_in_one
  else
    start_join
  fi
  if [ "$FOREGROUND" -eq 1 ]; then
    stay_in_foreground
  fi
  trap - INT TERM HUP
}

main "$@"
