#!/usr/bin/env bash
# Start, stop and check the services stacksift's distributed mode needs:
# Redis on 127.0.0.1:6379 and a single-node Elasticsearch on 127.0.0.1:9200.
#
#   scripts/services.sh start   [all|redis|es]   install if missing, start, wait until healthy
#   scripts/services.sh stop    [all|redis|es]   stop what this script started
#   scripts/services.sh restart [all|redis|es]
#   scripts/services.sh status  [all|redis|es]   exit 0 only if every named service is healthy
#
# Every command is idempotent: `start` on healthy services and `stop` on stopped ones are no-ops.
# Both services are private instances (own config, data, logs and pid files under the cache dir),
# never the system's redis-server service, so CI and developers get the same setup.
#
# Environment (all optional):
#   STACKSIFT_SERVICES_DIR      cache dir (default: $HOME/.cache/stacksift-services)
#   STACKSIFT_ES_VERSION        integ-test-zip version from Maven Central (default below)
#   STACKSIFT_ES_HEAP           JVM heap, -Xms = -Xmx (default: 1g)
#   STACKSIFT_ES_USER           unprivileged user ES runs as when invoked by root (default: stacksift-es)
#   STACKSIFT_ES_JAVA_HOME      Java 17+ home (default: derived from `java` on PATH)
#   STACKSIFT_ES_START_TIMEOUT  seconds to wait for a green cluster (default: 120)
#   STACKSIFT_ES_PORT / STACKSIFT_REDIS_PORT   (defaults: 9200 / 6379)
#   STACKSIFT_ES_TRANSPORT_PORT node-to-node port (default: the HTTP port + 100, so 9300)
# The server ignores exactly these names (app/settings.py), so one shell can export them for
# `services.sh stop` and still run `stacksift`.
set -euo pipefail
umask 022 # the ES user must be able to read the unpacked distribution

# 8.19 is the last 8.x minor; 9.x needs Java 21, which Debian bookworm does not package.
ES_VERSION=${STACKSIFT_ES_VERSION:-8.19.21}
ES_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
MVN_DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
SERVICES_DIR=${STACKSIFT_SERVICES_DIR:-$HOME/.cache/stacksift-services}
HOST=127.0.0.1
ES_PORT=${STACKSIFT_ES_PORT:-9200}
ES_TRANSPORT_PORT=${STACKSIFT_ES_TRANSPORT_PORT:-$((ES_PORT + 100))}
REDIS_PORT=${STACKSIFT_REDIS_PORT:-6379}
ES_HEAP=${STACKSIFT_ES_HEAP:-1g}
ES_START_TIMEOUT=${STACKSIFT_ES_START_TIMEOUT:-120}
ES_URL="http://${HOST}:${ES_PORT}"

DOWNLOAD_DIR="$SERVICES_DIR/downloads"
ES_HOME="$SERVICES_DIR/dist/elasticsearch-${ES_VERSION}"
ES_ROOT="$SERVICES_DIR/es"
ES_CONF="$ES_ROOT/config"
ES_DATA="$ES_ROOT/data"
ES_LOGS="$ES_ROOT/logs"
ES_TMP="$ES_ROOT/tmp"
ES_PIDFILE="$ES_ROOT/es.pid"
ES_CLUSTER=stacksift
ES_LOGFILE="$ES_LOGS/${ES_CLUSTER}.log"
ES_STARTUP_LOG="$ES_LOGS/startup.log"
REDIS_ROOT="$SERVICES_DIR/redis"
REDIS_PIDFILE="$REDIS_ROOT/redis.pid"
REDIS_LOG="$REDIS_ROOT/redis.log"

if [[ $EUID -eq 0 ]]; then
    ES_USER=${STACKSIFT_ES_USER:-stacksift-es}
else
    # A normal user can run ES directly: no account switching needed.
    ES_USER=$(id -un)
fi

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- helpers

pid_alive() { # pidfile -> prints pid and succeeds if the process it names is alive
    local pid cmdline
    [[ -s $1 ]] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A stale pid file (after a reboot) may name an unrelated process: check what it runs.
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    case $1 in
    "$ES_PIDFILE") [[ $cmdline == *org.elasticsearch* ]] || return 1 ;;
    "$REDIS_PIDFILE") [[ $cmdline == *redis-server* ]] || return 1 ;;
    esac
    printf '%s' "$pid"
}

port_open() { # port -> succeeds if something accepts TCP connections on HOST:port
    (exec 3<>"/dev/tcp/${HOST}/$1") 2>/dev/null
}

rss_mb() { # pid -> resident set size in MiB
    local kb
    kb=$(ps -o rss= -p "$1" 2>/dev/null | tr -d ' ')
    printf '%s' "$((${kb:-0} / 1024))"
}

apt_install() { # package... ; refresh the package lists only when a plain install fails
    [[ $EUID -eq 0 ]] || die "need root to apt-get install $*; install it yourself or run as root"
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "$@" >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q "$@" >/dev/null
    fi
}

stop_pid() { # name pid seconds -> SIGTERM, wait, then SIGKILL
    local name=$1 pid=$2 wait_s=$3 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for ${wait_s}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

with_lock() { # serialise start/stop: several developers' tests may call this script at once
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 300 9 || die "another services.sh holds $SERVICES_DIR/.lock for over 300s"
}

# ---------------------------------------------------------------- Redis

redis_healthy() {
    pid_alive "$REDIS_PIDFILE" >/dev/null &&
        [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

redis_start() {
    if redis_healthy; then
        log "redis already running (pid $(pid_alive "$REDIS_PIDFILE"), ${HOST}:${REDIS_PORT})"
        return 0
    fi
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-cli >/dev/null || apt_install redis-tools
    if pid_alive "$REDIS_PIDFILE" >/dev/null; then
        # Our process is alive but does not answer: restart it rather than guess.
        stop_pid redis "$(pid_alive "$REDIS_PIDFILE")" 10
    fi
    port_open "$REDIS_PORT" &&
        die "${HOST}:${REDIS_PORT} is taken by a process this script did not start" \
            "(a system redis-server? stop it with: service redis-server stop)"

    mkdir -p "$REDIS_ROOT/data"
    # Regenerated on every start so edits here take effect; AOF keeps queued jobs across restarts.
    cat >"$REDIS_ROOT/redis.conf" <<EOF
# Generated by scripts/services.sh; edits are overwritten.
bind ${HOST}
port ${REDIS_PORT}
protected-mode yes
daemonize yes
pidfile ${REDIS_PIDFILE}
logfile ${REDIS_LOG}
dir ${REDIS_ROOT}/data
appendonly yes
appendfsync everysec
# The AOF is the persistence; no extra RDB snapshots (forks) on top of it.
save ""
EOF
    rm -f "$REDIS_PIDFILE"
    redis-server "$REDIS_ROOT/redis.conf" 9>&- || die "redis-server failed to start; see $REDIS_LOG"
    local i
    for ((i = 0; i < 100; i++)); do
        if redis_healthy; then
            log "redis started (pid $(pid_alive "$REDIS_PIDFILE"), ${HOST}:${REDIS_PORT}, AOF on)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 50 "$REDIS_LOG" >&2 || true
    die "redis did not answer PING within 10s"
}

redis_stop() {
    local pid
    if pid=$(pid_alive "$REDIS_PIDFILE"); then
        stop_pid redis "$pid" 30 # SIGTERM makes redis flush the AOF before exiting
        log "redis stopped (was pid $pid)"
    else
        log "redis not running"
    fi
    rm -f "$REDIS_PIDFILE"
}

redis_status() {
    local pid
    if redis_healthy; then
        pid=$(pid_alive "$REDIS_PIDFILE")
        echo "redis: healthy (pid $pid, ${HOST}:${REDIS_PORT}, rss $(rss_mb "$pid") MiB," \
            "aof $(redis-cli -h "$HOST" -p "$REDIS_PORT" config get appendonly | tail -n 1))"
        return 0
    elif pid=$(pid_alive "$REDIS_PIDFILE"); then
        echo "redis: NOT healthy (pid $pid alive but no PONG on ${HOST}:${REDIS_PORT})"
    else
        echo "redis: stopped"
    fi
    return 1
}

# ---------------------------------------------------------------- Elasticsearch

es_health() { # wait_seconds -> prints the cluster status (green/yellow/red) or nothing
    curl -s --max-time "$(($1 + 5))" \
        "${ES_URL}/_cluster/health?wait_for_status=green&timeout=${1}s&filter_path=status" 2>/dev/null |
        sed -n 's/.*"status":"\([a-z]*\)".*/\1/p'
}

es_healthy() {
    pid_alive "$ES_PIDFILE" >/dev/null && [[ $(es_health 0) == green ]]
}

es_java_home() {
    local java home major
    if [[ -n ${STACKSIFT_ES_JAVA_HOME:-} ]]; then
        home=$STACKSIFT_ES_JAVA_HOME
    else
        command -v java >/dev/null || apt_install openjdk-17-jre-headless
        java=$(readlink -f "$(command -v java)")
        home=${java%/bin/java}
    fi
    [[ -x $home/bin/java ]] || die "no java at $home/bin/java"
    major=$("$home/bin/java" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p')
    [[ -n $major && $major -ge 17 ]] ||
        die "Elasticsearch ${ES_VERSION} needs Java 17+, $home has version '${major:-unknown}'"
    printf '%s' "$home"
}

es_install() {
    [[ -x $ES_HOME/bin/elasticsearch ]] && return 0
    local zip="$DOWNLOAD_DIR/elasticsearch-${ES_VERSION}.zip" t0 staging
    if [[ ! -s $zip ]]; then
        command -v mvn >/dev/null || apt_install maven
        mkdir -p "$DOWNLOAD_DIR"
        log "downloading ${ES_ARTIFACT} with mvn dependency:copy"
        t0=$SECONDS
        # -C: fail on checksum mismatch instead of warning.
        if ! mvn -B -C -Dstyle.color=never "${MVN_DEPENDENCY_PLUGIN}:copy" \
            -Dartifact="$ES_ARTIFACT" -DoutputDirectory="$DOWNLOAD_DIR" >"$DOWNLOAD_DIR/mvn.log" 2>&1; then
            tail -n 30 "$DOWNLOAD_DIR/mvn.log" >&2
            die "mvn could not fetch ${ES_ARTIFACT} (full output: $DOWNLOAD_DIR/mvn.log)"
        fi
        log "downloaded $(du -m "$zip" | cut -f1) MiB in $((SECONDS - t0))s"
    fi
    command -v unzip >/dev/null || apt_install unzip
    mkdir -p "$SERVICES_DIR/dist"
    # Unpack beside the target and rename, so an interrupted unzip never looks installed.
    staging=$(mktemp -d "$SERVICES_DIR/dist/.unpack.XXXXXX")
    unzip -q "$zip" -d "$staging" || {
        rm -rf "$staging" "$zip"
        die "corrupt download $zip (removed; run start again)"
    }
    rm -rf "$ES_HOME"
    mv "$staging/elasticsearch-${ES_VERSION}" "$ES_HOME"
    rm -rf "$staging"
    chmod -R a+rX "$ES_HOME"
}

es_ensure_user() {
    [[ $EUID -eq 0 ]] || return 0
    getent passwd "$ES_USER" >/dev/null && return 0
    log "creating system user $ES_USER (Elasticsearch refuses to run as root)"
    useradd --system --user-group --no-create-home --home-dir "$ES_ROOT" \
        --shell /usr/sbin/nologin "$ES_USER"
}

as_es_user() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u "$ES_USER" -- "$@"
    else
        "$@"
    fi
}

es_launch() { # java_home -> start the node in the background as the ES user, clean env
    local java_home=$1
    local -a cmd=(env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="$ES_ROOT"
        ES_JAVA_HOME="$java_home" ES_PATH_CONF="$ES_CONF" ES_TMPDIR="$ES_TMP"
        "$ES_HOME/bin/elasticsearch" -d -p "$ES_PIDFILE")
    [[ $EUID -ne 0 ]] || cmd=(runuser -u "$ES_USER" -- "${cmd[@]}")
    # -d returns once the node has started (or failed); env -i keeps the caller's
    # JAVA_TOOL_OPTIONS, ES_JAVA_OPTS etc. out of the node.
    # 9>&-: the daemon must not inherit (and so hold forever) the lock of with_lock.
    (cd "$ES_HOME" && timeout "$ES_START_TIMEOUT" "${cmd[@]}" >>"$ES_STARTUP_LOG" 2>&1 9>&-)
}

es_ensure_traversable() { # the ES user must reach $ES_ROOT and $ES_HOME, e.g. through a 0700 /root
    [[ $EUID -eq 0 ]] || return 0
    local dir path rel
    for path in "$ES_ROOT" "$ES_HOME"; do
        # Walk from / down, so a blocked parent is fixed before its children are tested.
        dir=""
        rel=${path#/}
        while [[ -n $rel ]]; do
            dir="$dir/${rel%%/*}"
            [[ $rel == */* ]] && rel=${rel#*/} || rel=""
            as_es_user test -x "$dir" && continue
            if command -v setfacl >/dev/null && setfacl -m "u:${ES_USER}:x" "$dir" 2>/dev/null; then
                log "granted $ES_USER search permission on $dir (ACL u:${ES_USER}:x)"
            else
                chmod o+x "$dir"
                log "granted search permission (o+x) on $dir so $ES_USER can reach $path"
            fi
        done
    done
}

es_write_config() {
    mkdir -p "$ES_CONF/jvm.options.d" "$ES_DATA" "$ES_LOGS" "$ES_TMP"
    # Start from the distribution's log4j2.properties/jvm.options; the keystore ES adds stays.
    local f
    for f in jvm.options log4j2.properties; do
        cp "$ES_HOME/config/$f" "$ES_CONF/$f"
    done
    # Only settings of modules this zip has: an unknown setting (xpack.ml.*, ingest.geoip.*, ...)
    # aborts startup. x-pack-security is present, so xpack.security.enabled is valid.
    cat >"$ES_CONF/elasticsearch.yml" <<EOF
# Generated by scripts/services.sh; edits are overwritten.
cluster.name: ${ES_CLUSTER}
node.name: ${ES_CLUSTER}-1
discovery.type: single-node
network.host: ${HOST}
http.port: ${ES_PORT}
transport.port: ${ES_TRANSPORT_PORT}
path.data: ${ES_DATA}
path.logs: ${ES_LOGS}
xpack.security.enabled: false
# This machine kind can be low on disk: never flip indices to read-only.
cluster.routing.allocation.disk.threshold_enabled: false
EOF
    printf -- '-Xms%s\n-Xmx%s\n' "$ES_HEAP" "$ES_HEAP" >"$ES_CONF/jvm.options.d/heap.options"
    if [[ $EUID -eq 0 ]]; then
        chown -R "$ES_USER:$ES_USER" "$ES_ROOT"
    fi
}

ES_LOG_OFFSET=0 # size of $ES_LOGFILE before this start: older runs' lines would mislead

es_tail_logs() {
    if [[ -s $ES_STARTUP_LOG ]]; then
        printf '%s\n' "----- last 50 lines of $ES_STARTUP_LOG -----" >&2
        tail -n 50 "$ES_STARTUP_LOG" >&2
    fi
    if [[ -s $ES_LOGFILE ]]; then
        printf '%s\n' "----- last 50 lines of $ES_LOGFILE (this start) -----" >&2
        tail -c +"$((ES_LOG_OFFSET + 1))" "$ES_LOGFILE" | tail -n 50 >&2
    fi
}

ES_LAUNCHED=false # true once this run started the node: only then may a failure stop it

es_fail() { # message -> show the log, stop a node this run half-started, exit non-zero
    local pid yellow
    es_tail_logs
    if pid=$(pid_alive "$ES_PIDFILE"); then
        if $ES_LAUNCHED; then
            stop_pid elasticsearch "$pid" 30
        else
            # Someone else's running node stays up: it may just hold an index with replicas.
            yellow=$(curl -s --max-time 5 "${ES_URL}/_cat/indices?health=yellow&h=index" | tr '\n' ' ')
            [[ -z $yellow ]] || log "indices with unassignable replicas (set number_of_replicas: 0): $yellow"
        fi
    fi
    die "$1"
}

# A single node never assigns replicas: without this, the first index with the default
# 1 replica would turn the cluster yellow. Composable templates do not merge, so a project
# template that matches an index (higher priority) must set number_of_replicas: 0 itself.
es_put_default_template() {
    curl -s --fail --max-time 30 -X PUT -H 'Content-Type: application/json' \
        "${ES_URL}/_index_template/stacksift-services-defaults" \
        -d '{"index_patterns":["*"],"priority":0,
             "template":{"settings":{"index.number_of_replicas":0}},
             "_meta":{"description":"scripts/services.sh: single node, no replicas"}}' \
        >/dev/null || es_fail "could not install the default 0-replica index template"
}

es_start() {
    local pid status="" t0 java_home deadline remaining
    if es_healthy; then
        log "elasticsearch already running (pid $(pid_alive "$ES_PIDFILE"), ${ES_URL}, green)"
        return 0
    fi
    t0=$SECONDS
    deadline=$((SECONDS + ES_START_TIMEOUT))
    if ! pid=$(pid_alive "$ES_PIDFILE"); then
        port_open "$ES_PORT" &&
            die "${HOST}:${ES_PORT} is taken by a process this script did not start"
        java_home=$(es_java_home)
        es_install
        es_ensure_user
        es_write_config
        es_ensure_traversable
        rm -f "$ES_PIDFILE"
        ES_LOG_OFFSET=$(stat -c %s "$ES_LOGFILE" 2>/dev/null || echo 0)
        : >"$ES_STARTUP_LOG"
        [[ $EUID -ne 0 ]] || chown "$ES_USER:$ES_USER" "$ES_STARTUP_LOG"
        log "starting elasticsearch ${ES_VERSION} as $ES_USER (java $java_home, heap $ES_HEAP)"
        t0=$SECONDS
        ES_LAUNCHED=true
        es_launch "$java_home" || case $? in
        124) es_fail "elasticsearch did not start within ${ES_START_TIMEOUT}s" ;;
        *) es_fail "elasticsearch failed to start" ;;
        esac
    else
        log "elasticsearch pid $pid is alive but not green yet; waiting"
    fi
    while :; do
        pid_alive "$ES_PIDFILE" >/dev/null || es_fail "elasticsearch exited during startup"
        remaining=$((deadline - SECONDS))
        ((remaining > 0)) || break
        status=$(es_health "$((remaining < 5 ? remaining : 5))")
        [[ $status == green ]] && break
        [[ -n $status ]] || sleep 1 # HTTP not up yet
    done
    [[ $status == green ]] ||
        es_fail "elasticsearch not green after ${ES_START_TIMEOUT}s (status: ${status:-no answer})"
    es_put_default_template
    pid=$(pid_alive "$ES_PIDFILE")
    log "elasticsearch ${ES_VERSION} green on ${ES_URL} after $((SECONDS - t0))s" \
        "(pid $pid, rss $(rss_mb "$pid") MiB)"
}

es_stop() {
    local pid
    if pid=$(pid_alive "$ES_PIDFILE"); then
        stop_pid elasticsearch "$pid" 60
        log "elasticsearch stopped (was pid $pid)"
    else
        log "elasticsearch not running"
    fi
    rm -f "$ES_PIDFILE"
}

es_status() {
    local pid status version
    if ! pid=$(pid_alive "$ES_PIDFILE"); then
        echo "elasticsearch: stopped"
        return 1
    fi
    status=$(es_health 0)
    version=$(curl -s --max-time 5 "${ES_URL}/_nodes/_local?filter_path=nodes.*.version" |
        sed -n 's/.*"version":"\([^"]*\)".*/\1/p')
    if [[ $status == green ]]; then
        echo "elasticsearch: healthy (pid $pid, ${ES_URL}, version ${version:-?}, green," \
            "rss $(rss_mb "$pid") MiB)"
        return 0
    fi
    echo "elasticsearch: NOT healthy (pid $pid, ${ES_URL}, status ${status:-no answer})"
    if [[ $status == yellow ]]; then
        echo "  indices with unassignable replicas (set number_of_replicas: 0):" \
            "$(curl -s --max-time 5 "${ES_URL}/_cat/indices?health=yellow&h=index" | tr '\n' ' ')"
    fi
    return 1
}

# ---------------------------------------------------------------- main

usage() {
    echo "usage: $0 {start|stop|restart|status} [all|redis|es]" >&2
    exit 2
}

main() {
    local action=${1:-} target=${2:-all} rc=0
    case $target in all | redis | es) ;; elasticsearch) target=es ;; *) usage ;; esac
    case $action in
    start)
        with_lock
        [[ $target == es ]] || redis_start
        [[ $target == redis ]] || es_start
        ;;
    stop)
        with_lock
        [[ $target == redis ]] || es_stop
        [[ $target == es ]] || redis_stop
        ;;
    restart)
        "$0" stop "$target"
        "$0" start "$target"
        ;;
    status)
        if [[ $target != es ]]; then redis_status || rc=1; fi
        if [[ $target != redis ]]; then es_status || rc=1; fi
        return "$rc"
        ;;
    *) usage ;;
    esac
}

main "$@"
