# shellcheck shell=bash
# Shell helpers shared by bench/compare and bench/ab (sourced, not run): starting a
# loopback rkvd cluster on free ports, CPU accounting from /proc, and stopping only the
# processes the script started, by pid. The sourcing script defines log(), $bin (where
# rkvctl is) and $pids (an array); start_rkv takes the rkvd binary to start as an
# optional second argument (default: $bin/rkvd).

# Whether process $1 still runs (a zombie does not).
alive() {
  [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Stops the servers this script started: SIGTERM, then SIGKILL for any still running
# after 3 s (their data is thrown away; etcd takes several seconds to stop otherwise).
stop_servers() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    local running=false
    for pid in "${pids[@]}"; do
      if alive "$pid"; then running=true; fi
    done
    $running || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

# The last lines of each log in directory $1, for a failure message.
log_tails() {
  local file
  for file in "$1"/*.log; do
    [ -f "$file" ] || continue
    echo "--- $(basename "$file") (last lines) ---"
    tail -n 5 "$file"
  done >&2
}

# Whether something listens on loopback port $1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A random base port such that base..base+2 and base+1000..base+1002 are free, all below
# Linux's usual ephemeral range (32768 and up), where outgoing connections take ports.
free_base() {
  local base p busy
  for _ in $(seq 1 200); do
    base=$((20000 + RANDOM % 11000))
    busy=false
    for p in "$base" $((base + 1)) $((base + 2)) $((base + 1000)) $((base + 1001)) $((base + 1002)); do
      if port_in_use "$p"; then
        busy=true
        break
      fi
    done
    if ! $busy; then
      echo "$base"
      return 0
    fi
  done
  log "no free loopback ports found in 200 tries"
  return 1
}

# Sum of utime + stime (clock ticks) of each pid, one line per pid.
cpu_ticks() {
  local pid
  for pid in "$@"; do
    # Fields after the command name (which is in parentheses): 14 utime, 15 stime.
    sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
  done
}

# Starts a 3-node cluster of rkvd $2 (default $bin/rkvd) in $1; sets cluster (rkvctl's
# -cluster) and pids.
start_rkv() {
  local dir=$1 rkvd=${2:-$bin/rkvd} base id
  base=$(free_base) || return 1
  cluster="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
  mkdir -p "$dir"
  for id in 1 2 3; do
    "$rkvd" -id "$id" -servers "$cluster" -cluster 1,2,3 -data-dir "$dir/data-$id" \
      -servermetrics=false -quiet >"$dir/rkvd-$id.log" 2>&1 &
    pids+=("$!")
  done
  for _ in $(seq 1 100); do
    if "$bin/rkvctl" -cluster "$cluster" -timeout 1s put bench-ready 1 >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  log "rkvd did not accept a write within the bounded wait"
  log_tails "$dir"
  return 1
}

