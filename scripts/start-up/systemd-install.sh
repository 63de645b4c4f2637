# shellcheck shell=bash
# Sourced by start-up.sh: the production install. `./start-up.sh install` writes a systemd unit for each program
# (started at boot, restarted whenever it exits, for ever) with its settings in an environment file only root
# reads, and starts them; `./start-up.sh uninstall` removes the units, what the net manager made on this machine
# (its bridge, TUN, veths and iptables chain) and, asked first, the data. Uses start-up.sh's functions.

UNIT_DIR=${START_UP_UNIT_DIR:-/etc/systemd/system}
CONFIG_DIR=${START_UP_CONFIG_DIR:-/etc/edge-orchestrator}
DATA_ROOT=${START_UP_DATA_DIR:-/var/lib/edge-orchestrator}
# What the net manager makes: its iptables chain (a fixed name) and container veths (ve-<12 hex digits>); its
# TUN and bridge are named by NM_TUN and NM_BRIDGE, read back from its settings.
OVERLAY_CHAIN=EDGE-OVERLAY
OVERLAY_VETH='^ve-[0-9a-f]{12}$'

unit_name() { echo "edge-$1.service"; }
unit_file() { echo "$UNIT_DIR/$(unit_name "$1")"; }
settings_file() { echo "$CONFIG_DIR/$1.env"; }

# The variable holding a program's data dir.
data_dir_variable() {
  case $1 in
    cluster-manager) echo CM_DATA_DIR ;;
    net-manager) echo NM_DATA_DIR ;;
    node-engine) echo NE_DATA_DIR ;;
  esac
}

# systemd runs this machine, as systemctl says ("offline" where it is not PID 1: a container, a chroot).
systemd_runs() {
  local state
  command -v systemctl >/dev/null 2>&1 || return 1
  state=$(systemctl is-system-running 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != offline ] && [ "$state" != unknown ]
}

require_systemd() {
  systemd_runs && return 0
  die 1 "systemd does not run this machine (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): install needs it; ./start-up.sh $(machine_arch) runs the programs under start-up.sh's own supervisor instead"
}

require_root() {
  is_root || die 1 "$1 writes systemd units and runs the programs as root: run sudo ./start-up.sh $1"
}

# True when any program of this project is installed as a systemd unit here.
installed() {
  local program
  for program in "${PROGRAMS[@]}"; do
    [ -f "$(unit_file "$program")" ] && return 0
  done
  return 1
}

# systemd reads % as a specifier, $ as a variable and whitespace or quotes as separators: a path written into a
# unit must have none of them.
require_plain_path() {
  [[ $2 =~ ^/[A-Za-z0-9._/+:@-]*$ ]] ||
    die 1 "$1 $2 has characters a systemd unit cannot hold as they are (spaces, %, \$, quotes): move it to a plain path"
}

# The value of NAME in a program's settings file from an earlier install; empty when there is none.
installed_value() {
  local file line
  file=$(settings_file "$1")
  [ -f "$file" ] || return 0
  while IFS= read -r line; do
    if [[ $line =~ ^$2=\'(.*)\'$ ]]; then
      echo "${BASH_REMATCH[1]}"
      return 0
    fi
  done <"$file"
}

# The caller's environment variables a program reads (its own prefix, and the few without one).
program_variables() {
  local pattern
  case $1 in
    cluster-manager) pattern='^(CM_[A-Z0-9_]+|LOG_LEVEL)$' ;;
    net-manager) pattern='^(NM_[A-Z0-9_]+|LOG_LEVEL)$' ;;
    node-engine) pattern='^(NE_[A-Z0-9_]+|NODE_NAME|DOCKER_SOCKET|CLUSTER_MANAGER_URL|JOIN_TOKEN|LOG_LEVEL)$' ;;
  esac
  compgen -e | grep -E "$pattern" || true
}

# Installing again (after a git pull, say) keeps the settings of the earlier install: each one not set now is
# taken from its settings file. Not the join pair, which decides the mode (keep_installed_worker), nor the CA
# file install gave the node engine of an all-in-one cluster (a worker now verifies another cluster manager).
import_installed_settings() {
  local program file line name
  for program in "${PROGRAMS[@]}"; do
    file=$(settings_file "$program")
    [ -f "$file" ] || continue
    while IFS= read -r line; do
      [[ $line =~ ^([A-Z_][A-Z0-9_]*)=\'(.*)\'$ ]] || continue
      name=${BASH_REMATCH[1]}
      case $name in
        CLUSTER_MANAGER_URL | JOIN_TOKEN) continue ;;
        NE_CA_FILE) [ ! -f "$(unit_file cluster-manager)" ] || continue ;;
      esac
      [ -n "${!name:-}" ] || export "$name=${BASH_REMATCH[2]}"
    done <"$file"
  done
}

# A worker installed before stays one when installed again without CLUSTER_MANAGER_URL and JOIN_TOKEN (rather
# than becoming a cluster of its own); to change that, uninstall first.
keep_installed_worker() {
  [ -z "${CLUSTER_MANAGER_URL:-}" ] && [ -z "${JOIN_TOKEN:-}" ] || return 0
  [ -f "$(unit_file node-engine)" ] && [ ! -f "$(unit_file cluster-manager)" ] || return 0
  CLUSTER_MANAGER_URL=$(installed_value node-engine CLUSTER_MANAGER_URL)
  JOIN_TOKEN=$(installed_value node-engine JOIN_TOKEN)
  export CLUSTER_MANAGER_URL JOIN_TOKEN
  say "installed as a worker of $CLUSTER_MANAGER_URL before: it stays one (./start-up.sh uninstall first to change that)"
}

# A program's data dir: its variable (set now, or by an earlier install), else one under DATA_ROOT.
installed_data_dir() {
  local variable
  variable=$(data_dir_variable "$1")
  absolute_path "${!variable:-$DATA_ROOT/$1}"
}

# The join secret the cluster manager and its own node engine share: the one given (CM_JOIN_TOKEN, or kept from
# an earlier install), else the one the cluster manager generated into its data dir on an earlier start, else a
# new one. The node engine verifies the cluster manager with the CA file, so the secret needs no pin.
join_secret() {
  local data_dir=$1 secret=${CM_JOIN_TOKEN:-}
  if [ -z "$secret" ] && [ -s "$data_dir/join-token" ]; then
    read -r secret <"$data_dir/join-token" || true
  fi
  [ -n "$secret" ] || secret=$(node -e 'process.stdout.write(require("node:crypto").randomBytes(24).toString("base64url"))')
  echo "$secret"
}

# A program's settings file (0600 in a 0700 folder: it holds tokens): the caller's variables the program reads,
# then the NAME=value pairs given, which win. Values are single-quoted: systemd takes them as they are.
write_settings() {
  local program=$1 file name value
  shift
  local -A values=()
  for name in $(program_variables "$program"); do values[$name]=${!name}; done
  for value in "$@"; do values[${value%%=*}]=${value#*=}; done
  file=$(settings_file "$program")
  [ -d "$CONFIG_DIR" ] || mkdir -p -m 700 "$CONFIG_DIR"
  (
    umask 077
    {
      echo "# The environment of $(unit_name "$program"), written by $PROJECT_DIR/start-up.sh install."
      echo "# Change a line, then: systemctl restart $(unit_name "$program"). Installing again keeps these values"
      echo "# unless the variable is set then."
      for name in $(printf '%s\n' "${!values[@]}" | sort); do
        value=${values[$name]}
        [ -n "$value" ] || continue
        if [[ $value == *"'"* || $value == *$'\n'* ]]; then
          rm -f "$file.tmp"
          die 1 "$name holds a quote or a line break, which its systemd settings file cannot hold"
        fi
        echo "$name='$value'"
      done
    } >"$file.tmp"
  ) || exit 1
  mv -f "$file.tmp" "$file"
}

# systemd 254 and later back off between restarts (1 s growing to 30 s, as start-up.sh's own supervisor does);
# older ones (Debian 12 has 252) restart every 5 s.
restart_settings() {
  local version
  version=$(systemctl --version 2>/dev/null | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
  if [ "${version:-0}" -ge 254 ]; then
    printf 'RestartSec=1\nRestartSteps=5\nRestartMaxDelaySec=30\n'
  else
    echo 'RestartSec=5'
  fi
}

# The unit of a program: what start-up.sh's supervisor would run (node, the node-options of the node engine,
# the built program), with its settings file, restarted whenever it exits but for a usage error.
write_unit() {
  local program=$1 description=$2 after=$3 wants=$4 extra=$5 unit node line tuning=""
  unit=$(unit_file "$program")
  node=$(command -v node)
  read_node_options "$program"
  for line in ${NODE_TUNING[@]+"${NODE_TUNING[@]}"}; do tuning+="Environment=$line"$'\n'; done
  mkdir -p "$UNIT_DIR"
  cat >"$unit.tmp" <<EOF
# Written by $PROJECT_DIR/start-up.sh install, removed by ./start-up.sh uninstall.
[Unit]
Description=edge orchestrator: $description
Documentation=file://$PROJECT_DIR/README.md
After=network-online.target$after
Wants=network-online.target$wants
# Tried again for ever: a far-away machine has nobody to reset a unit that gave up.
StartLimitIntervalSec=0

[Service]
Type=simple
WorkingDirectory=$PROJECT_DIR
EnvironmentFile=$(settings_file "$program")
${tuning}ExecStart=$node${NODE_FLAGS[*]:+ ${NODE_FLAGS[*]}} $PROJECT_DIR/dist/$program/main.js
Restart=always
$(restart_settings)
# Exit code 2 is a usage error (a bad flag or setting): restarting cannot fix it.
RestartPreventExitStatus=2
TimeoutStopSec=$((STOP_GRACE_S + 10))
SyslogIdentifier=edge-$program
${extra}
[Install]
WantedBy=multi-user.target
EOF
  chmod 644 "$unit.tmp"
  mv -f "$unit.tmp" "$unit"
}

# Units of programs this install does not have any more (a cluster manager on a machine now a worker, a net
# manager installed before --no-net-manager) are stopped and removed; their data stays.
remove_stale_units() {
  local program unit
  for program in "${PROGRAMS[@]}"; do
    [[ " $* " == *" $program "* ]] && continue
    unit=$(unit_file "$program")
    [ -f "$unit" ] || continue
    systemctl disable --now --quiet "$(unit_name "$program")" || warn "systemctl disable --now $(unit_name "$program") failed"
    rm -f "$unit" "$(settings_file "$program")"
    say "removed $(unit_name "$program"): not part of this install any more (its data stays in $(installed_data_dir "$program"))"
  done
}

# Until the installed cluster manager answers; false when it does not within HEALTH_TIMEOUT_S.
wait_for_service_health() {
  local url=$1 ca_file=$2 i
  say "waiting for the cluster manager to answer $url"
  for ((i = 0; i < HEALTH_TIMEOUT_S; i++)); do
    NODE_EXTRA_CA_CERTS=$ca_file node "$PROBE" get "$url" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

install_services() {
  local programs=() units=() program node cm_data nm_data ne_data
  local local_url="" secret="" ca_file="" scheme=https ne_settings=() nm_settings=() ne_after="" ne_wants=""
  node=$(command -v node)
  require_plain_path "the project directory" "$PROJECT_DIR"
  require_plain_path "node" "$node"
  require_plain_path "START_UP_CONFIG_DIR" "$CONFIG_DIR"
  cm_data=$(installed_data_dir cluster-manager)
  nm_data=$(installed_data_dir net-manager)
  ne_data=$(installed_data_dir node-engine)

  [ "$MODE" = all-in-one ] && programs+=(cluster-manager)
  if [ "$WITH_NET_MANAGER" -eq 0 ]; then
    say "no net manager (--no-net-manager): the node runs with the overlay off"
  elif [ ! -f dist/net-manager/main.js ] || [ ! -f net-manager/native/build/Release/edge_tun.node ]; then
    warn "the net manager is not built (dist/net-manager/main.js or its TUN addon missing): the node runs with the overlay off"
  else
    programs+=(net-manager)
  fi
  programs+=(node-engine)

  if [ "$MODE" = all-in-one ]; then
    if insecure_mode; then
      scheme=http
      warn "CM_INSECURE is set: TLS is off, tokens, node secrets and job env cross the network in clear text"
    else
      ca_file=${CM_TLS_CA:-$cm_data/tls/ca.pem}
    fi
    local_url=$scheme://127.0.0.1:${CM_HTTP_PORT:-10100}
    secret=$(join_secret "$cm_data")
    write_settings cluster-manager "CM_DATA_DIR=$cm_data" "CM_JOIN_TOKEN=$secret"
    write_unit cluster-manager "cluster manager (HTTP API, dashboard, MQTT broker)" "" "" ""
    ne_settings+=("CLUSTER_MANAGER_URL=$local_url" "JOIN_TOKEN=$secret")
    [ -z "$ca_file" ] || ne_settings+=("NE_CA_FILE=${NE_CA_FILE:-$ca_file}")
    ne_after+=" $(unit_name cluster-manager)"
  fi
  if [[ " ${programs[*]} " == *" net-manager "* ]]; then
    # Pinned only when asked for: left alone, the net manager finds the address that routes to the broker at
    # each start, which follows a new DHCP lease.
    [ -z "${ADVERTISE_ADDRESS:-}" ] || nm_settings+=("NM_PUBLIC_IP=${NM_PUBLIC_IP:-$ADVERTISE_ADDRESS}")
    write_settings net-manager "NM_DATA_DIR=$nm_data" ${nm_settings[@]+"${nm_settings[@]}"}
    write_unit net-manager "net manager (the overlay: TUN, bridge, routes; needs root and /dev/net/tun)" \
      "${ne_after}" "" ""
    ne_after+=" $(unit_name net-manager)"
    ne_wants+=" $(unit_name net-manager)"
  fi
  write_settings node-engine "NE_DATA_DIR=$ne_data" \
    "NE_NET_MANAGER_SOCKET=${NE_NET_MANAGER_SOCKET:-$nm_data/net-manager.sock}" ${ne_settings[@]+"${ne_settings[@]}"}
  # Wants, not Requires: the node engine runs native jobs without Docker and notices dockerd coming and going.
  # KillMode=process: stopping it leaves what it started running (native jobs, as Docker keeps containers); the
  # node engine started again adopts them.
  write_unit node-engine "node engine (runs this worker's jobs)" " docker.service$ne_after" \
    " docker.service$ne_wants" "KillMode=process
"
  for program in "${programs[@]}"; do units+=("$(unit_name "$program")"); done

  remove_stale_units "${programs[@]}"
  systemctl daemon-reload || die 1 "systemctl daemon-reload failed"
  systemctl enable --quiet "${units[@]}" || die 1 "systemctl enable ${units[*]} failed"
  # Restart: an install over a running one (an upgrade) runs the new build.
  systemctl restart "${units[@]}" || die 1 "systemctl restart ${units[*]} failed; see journalctl -u ${units[0]}"
  say "installed and started ${units[*]} (units in $UNIT_DIR, settings in $CONFIG_DIR)"
  link_edgectl

  if [ "$MODE" = all-in-one ]; then
    local api_token_file=$cm_data/api-token context_file="" join_token=""
    [ -z "${CM_API_TOKEN:-}" ] || api_token_file=""
    context_file=$(write_local_context "$local_url" "$ca_file" "$api_token_file")
    if ! systemctl is-active --quiet "$(unit_name cluster-manager)"; then
      warn "$(unit_name cluster-manager) is not active: see systemctl status $(unit_name cluster-manager) and journalctl -u $(unit_name cluster-manager)"
    elif ! wait_for_service_health "$local_url/api/health" "$ca_file"; then
      journalctl -u "$(unit_name cluster-manager)" -n 20 --no-pager >&2 2>/dev/null || true
      die 1 "installed, but the cluster manager does not answer $local_url/api/health after $HEALTH_TIMEOUT_S s: see journalctl -u $(unit_name cluster-manager)"
    else
      [ -s "$cm_data/node-join-token" ] && read -r join_token <"$cm_data/node-join-token"
      if [ -s "$api_token_file" ] && systemctl is-active --quiet "$(unit_name node-engine)"; then
        wait_for_node "$local_url" "$(cat "$api_token_file")" "${NODE_NAME:-$(hostname)}" "$ca_file"
      fi
    fi
    print_install_summary "${units[*]}" "$cm_data" "$context_file" \
      "$scheme://$(advertise_address_or_placeholder):${CM_HTTP_PORT:-10100}" "$join_token"
  else
    print_install_summary "${units[*]}" "" "" "$CLUSTER_MANAGER_URL" ""
  fi
}

advertise_address_or_placeholder() {
  local address
  address=$(advertise_address)
  echo "${address:-<this-machine>}"
}

print_install_summary() {
  local units=$1 cm_data=$2 context_file=$3 url=$4 join_token=$5 journal="" unit
  for unit in $units; do journal+=" -u ${unit%.service}"; done
  echo
  if [ -n "$cm_data" ]; then
    echo "[start-up] the all-in-one cluster is installed as systemd services: ${units//.service/}."
  else
    echo "[start-up] this worker is installed as systemd services (${units//.service/}) and joins $url."
  fi
  cat <<EOF
  They start at boot and start again whenever they exit; the node engine starts after docker.service.
  Units:     $UNIT_DIR/edge-*.service   Settings: $CONFIG_DIR/<program>.env (root only)
  Data:      $DATA_ROOT/ (unless a *_DATA_DIR says otherwise)
  Logs:      journalctl$journal -f   (the journal rotates them)
  State:     systemctl status ${units//.service/}
EOF
  [ -z "$EDGECTL_LINE" ] || echo "  edgectl:   $EDGECTL_LINE${context_file:+, context \"local\" in $context_file}"
  if [ -n "$cm_data" ]; then
    echo "  Join another worker (as a service; ./start-up.sh <arch> starts one without installing):"
    echo "    CLUSTER_MANAGER_URL=$url JOIN_TOKEN=${join_token:-<join token>} ./start-up.sh install"
    [ -n "$join_token" ] ||
      echo "  (the join token is in $cm_data/node-join-token from the cluster manager's first start)"
  fi
  echo "  Upgrade: git pull && ./start-up.sh install   Remove: ./start-up.sh uninstall"
}

# ---------------------------------------------------------------------------------------------------------
# Uninstall
# ---------------------------------------------------------------------------------------------------------

# A yes/no question whose answer destroys something: no unless asked with -y or answered yes on a terminal.
confirm_removal() {
  ask "$1" no
}

remove_units() {
  local i program unit removed=0
  for ((i = ${#PROGRAMS[@]} - 1; i >= 0; i--)); do
    program=${PROGRAMS[i]}
    unit=$(unit_file "$program")
    [ -f "$unit" ] || continue
    if systemd_runs; then
      systemctl disable --now --quiet "$(unit_name "$program")" || warn "systemctl disable --now $(unit_name "$program") failed"
    fi
    rm -f "$unit" "$UNIT_DIR/multi-user.target.wants/$(unit_name "$program")"
    say "removed $(unit_name "$program")"
    removed=1
  done
  if [ "$removed" -eq 0 ]; then
    say "no systemd unit of this project in $UNIT_DIR"
  elif systemd_runs; then
    systemctl daemon-reload || warn "systemctl daemon-reload failed"
  fi
}

# The names of this machine's links of one type (veth, bridge, tun).
links_of_type() {
  ip -o link show type "$1" 2>/dev/null | sed -n 's/^[0-9]*: \([^:@]*\)[:@].*/\1/p'
}

# What the net manager makes on the machine and removes itself when it stops: left behind when it was killed.
# Only links of the right type with its names, and its own iptables chain.
remove_overlay_links() {
  local tun=$1 bridge=$2 removed=() link
  if command -v ip >/dev/null 2>&1; then
    for link in $(links_of_type veth | grep -E "$OVERLAY_VETH" || true); do
      ip link del dev "$link" 2>/dev/null && removed+=("veth $link")
    done
    if links_of_type bridge | grep -qxF "$bridge"; then
      ip link del dev "$bridge" && removed+=("bridge $bridge")
    fi
    # The overlay route goes with it.
    if links_of_type tun | grep -qxF "$tun"; then
      ip link del dev "$tun" && removed+=("TUN $tun")
    fi
  fi
  if command -v iptables >/dev/null 2>&1 && iptables -w -S "$OVERLAY_CHAIN" >/dev/null 2>&1; then
    while iptables -w -D FORWARD -j "$OVERLAY_CHAIN" 2>/dev/null; do :; done
    iptables -w -F "$OVERLAY_CHAIN" && iptables -w -X "$OVERLAY_CHAIN" && removed+=("iptables chain $OVERLAY_CHAIN")
  fi
  if [ ${#removed[@]} -gt 0 ]; then
    say "removed what the net manager made: $(printf '%s, ' "${removed[@]}" | sed 's/, $//')"
  else
    say "no overlay links or iptables chain of this project on this machine"
  fi
}

remove_settings() {
  local program removed=0
  for program in "${PROGRAMS[@]}"; do
    [ -f "$(settings_file "$program")" ] || continue
    rm -f "$(settings_file "$program")"
    removed=1
  done
  rmdir "$CONFIG_DIR" 2>/dev/null || true
  [ "$removed" -eq 0 ] || say "removed the settings in $CONFIG_DIR"
}

# The id of the node whose identity is in a node engine data dir; empty when there is none.
node_id_in() {
  [ -f "$1/identity.json" ] || return 0
  node -e 'try { process.stdout.write(JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")).nodeId ?? "") } catch {}' \
    "$1/identity.json"
}

# The data dirs, and this node's containers with them, after asking (never without -y or a yes).
remove_data() {
  local node_id=$1 dir containers=()
  shift
  local dirs=("$@")
  if [ -n "$node_id" ] && docker_works; then
    mapfile -t containers < <(docker ps -aq --filter "label=edge.node=$node_id")
  elif [ -n "$node_id" ]; then
    warn "the Docker engine does not answer: this node's containers (label edge.node=$node_id) stay, whatever the answer below"
  fi
  if [ ${#dirs[@]} -eq 0 ] && [ ${#containers[@]} -eq 0 ]; then
    say "no data of an install here ($DATA_ROOT)"
    return 0
  fi
  say "the data: ${dirs[*]}"
  [ ${#containers[@]} -eq 0 ] || say "this node's containers: ${#containers[@]} (docker ps --filter label=edge.node=$node_id)"
  if confirm_removal "Remove the data (cluster state, tokens, the cluster CA, this node's identity) and this node's containers? It cannot be undone."; then
    if [ ${#containers[@]} -gt 0 ]; then
      docker rm -f "${containers[@]}" >/dev/null
      say "removed this node's ${#containers[@]} containers"
    fi
    for dir in "${dirs[@]}"; do
      case $dir in
        / | "$PROJECT_DIR" | "${HOME:-/}") warn "not removing $dir" ;;
        /*) rm -rf -- "$dir" ;;
      esac
    done
    rmdir "$DATA_ROOT" 2>/dev/null || true
    say "removed the data"
  else
    say "kept the data (a later install takes it up again); ./start-up.sh uninstall -y removes it"
    [ ${#containers[@]} -eq 0 ] || say "this node's containers keep running; they go with the data"
  fi
}

uninstall() {
  require_root uninstall
  local program dirs=() node_id
  # Where the data is and the names the net manager used, from the settings, before they go.
  import_installed_settings
  for program in "${PROGRAMS[@]}"; do
    [ -d "$(installed_data_dir "$program")" ] && dirs+=("$(installed_data_dir "$program")")
  done
  node_id=$(node_id_in "$(installed_data_dir node-engine)")
  if any_running; then
    say "stopping what ./start-up.sh started"
    stop_all
  fi
  remove_units
  remove_overlay_links "${NM_TUN:-edge0}" "${NM_BRIDGE:-edgebr0}"
  remove_edgectl_link
  remove_settings
  remove_data "$node_id" ${dirs[@]+"${dirs[@]}"}
  say "uninstalled"
}
