#!/usr/bin/env bash
# Starts and stops a real S3 server for tests: Ceph radosgw on loopback (one monitor, one
# memstore OSD, radosgw), everything inside STATE; see ../shared/notes/s3-test-server.md.
#   s3server.sh start STATE [BUCKET]  prints the endpoint URL; writes STATE/env (AWS_* variables,
#                                     S3_ENDPOINT, S3_BUCKET) for `. STATE/env`
#   s3server.sh stop STATE            kills the three daemons it started and removes their data
#   s3server.sh stop-rgw STATE        kills radosgw alone (the endpoint refuses connections; the
#                                     objects stay in the OSD)
#   s3server.sh start-rgw STATE       starts it again on the same port, with the same objects
# The bucket (default "ferry-test") is created with the fixed test user's key.
# S3SERVER_MEMSTORE_BYTES (default 4 GiB) caps what the OSD holds, in its memory.
set -euo pipefail

ACCESS_KEY=FERRYTESTACCESSKEY01
SECRET_KEY=ferry/test/secret/key/0123456789abcdefABCD

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # tries command...
	local tries=$1
	shift
	for _ in $(seq "$tries"); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

osd_up() {
	ceph -c "$CONF" --connect-timeout 5 osd dump 2>/dev/null | grep -q '^osd\.0 up'
}

rgw_up() {
	/usr/bin/python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"
}

fail() {
	echo "s3server.sh: $*" >&2
	for f in "$STATE"/log/*.log; do
		[ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
	done
	stop_daemons
	exit 1
}

stop_daemons() {
	local f pid pids=()
	for f in "$STATE"/run/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f" 2>/dev/null || true)
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null && pids+=("$pid")
		rm -f "$f"
	done
	# Gone before the caller removes STATE, so that no dying daemon writes into it.
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	done
}

start() {
	STATE=$1
	local bucket=${2:-ferry-test}
	mkdir -p "$STATE"
	STATE=$(cd "$STATE" && pwd)
	CONF=$STATE/ceph.conf
	mkdir -p "$STATE/run" "$STATE/log" "$STATE/mon" "$STATE/osd/ceph-0" "$STATE/rgw"
	local fsid osd_uuid mon_port rgw_port
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	mon_port=$(free_port)
	rgw_port=$(free_port)
	cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 0
mon_data_avail_crit = 0
run_dir = $STATE/run
admin_socket = $STATE/run/\$name.asok
pid_file = $STATE/run/\$name.pid
log_file = $STATE/log/\$name.log
crash_dir = $STATE/crash
keyring = $STATE/keyring
[mon]
mon_data = $STATE/mon/\$cluster-\$id
paxos_propose_interval = 0.05
[osd]
osd_objectstore = memstore
memstore_device_bytes = ${S3SERVER_MEMSTORE_BYTES:-4294967296}
osd_data = $STATE/osd/\$cluster-\$id
[client]
ms_mon_client_mode = crc
log_file = $STATE/log/\$name.log
[client.rgw.ferry]
# tcp_nodelay: beast writes a GET's headers and body separately; with Nagle on, each small GET
# waited ~40 ms for the client's delayed ACK (measured: 43 ms per GET of 100 bytes, 2 ms with).
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw_data = $STATE/rgw
rgw_enable_gc_threads = false
rgw_enable_lc_threads = false
rgw_enable_quota_threads = false
rgw_dynamic_resharding = false
CONF
	touch "$STATE/keyring"
	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$STATE/monmap" \
		>"$STATE/log/setup.out" 2>&1 || fail "monmaptool failed"
	ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE/monmap" >>"$STATE/log/setup.out" 2>&1 ||
		fail "ceph-mon --mkfs failed"
	ceph-mon -c "$CONF" -i a >>"$STATE/log/setup.out" 2>&1 || fail "ceph-mon did not start"
	local id
	id=$(ceph -c "$CONF" --connect-timeout 20 osd new "$osd_uuid" 2>>"$STATE/log/setup.out") ||
		fail "ceph osd new failed"
	[ "$id" = 0 ] || fail "unexpected osd id '$id'"
	ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$STATE/log/setup.out" 2>&1 ||
		fail "ceph-osd --mkfs failed"
	ceph-osd -c "$CONF" -i 0 >>"$STATE/log/setup.out" 2>&1 || fail "ceph-osd did not start"
	wait_for 300 osd_up || fail "the OSD did not come up"
	radosgw-admin -c "$CONF" user create --uid ferry --display-name ferry \
		--access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >>"$STATE/log/setup.out" 2>&1 ||
		fail "radosgw-admin user create failed"
	radosgw -c "$CONF" -n client.rgw.ferry >>"$STATE/log/setup.out" 2>&1 ||
		fail "radosgw did not start"
	wait_for 300 rgw_up "$rgw_port" || fail "radosgw does not answer on port $rgw_port"
	local endpoint=http://127.0.0.1:$rgw_port
	cat >"$STATE/env" <<ENV
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=$endpoint
export S3_ENDPOINT=$endpoint
export S3_BUCKET=$bucket
ENV
	# The bucket, with a signed PUT from botocore (an oracle independent of ferry's signer).
	/usr/bin/python3 - "$endpoint" "$bucket" "$ACCESS_KEY" "$SECRET_KEY" \
		>>"$STATE/log/setup.out" 2>&1 <<'PY' || fail "could not create the bucket"
import sys, time
import botocore.session
from botocore.config import Config
endpoint, bucket, key, secret = sys.argv[1:5]
s3 = botocore.session.get_session().create_client(
    's3', region_name='us-east-1', endpoint_url=endpoint, aws_access_key_id=key,
    aws_secret_access_key=secret, config=Config(s3={'addressing_style': 'path'}))
for attempt in range(50):
    try:
        s3.create_bucket(Bucket=bucket)
        break
    except Exception as e:
        if attempt == 49:
            raise
        time.sleep(0.2)
PY
	echo "$endpoint"
}

stop() {
	STATE=$1
	[ -d "$STATE" ] || return 0
	STATE=$(cd "$STATE" && pwd)
	stop_daemons
	rm -rf "$STATE/osd" "$STATE/mon" "$STATE/rgw" "$STATE/run"
}

# The S3 endpoint alone goes away and comes back, as a store's gateway does when restarted.
stop_rgw() {
	STATE=$(cd "$1" && pwd)
	local f=$STATE/run/client.rgw.ferry.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$f"
}

start_rgw() {
	STATE=$(cd "$1" && pwd)
	CONF=$STATE/ceph.conf
	local port
	port=$(sed -n 's/^rgw_frontends = beast endpoint=127.0.0.1:\([0-9]*\).*/\1/p' "$CONF")
	[ -n "$port" ] || fail "no radosgw port in $CONF"
	radosgw -c "$CONF" -n client.rgw.ferry >>"$STATE/log/setup.out" 2>&1 ||
		fail "radosgw did not start again"
	wait_for 300 rgw_up "$port" || fail "radosgw does not answer again on port $port"
}

case "${1:-}" in
start) shift; start "$@" ;;
stop) shift; stop "$@" ;;
stop-rgw) shift; stop_rgw "$@" ;;
start-rgw) shift; start_rgw "$@" ;;
*)
	echo "usage: s3server.sh start STATE [BUCKET] | stop STATE | stop-rgw STATE | start-rgw STATE" >&2
	exit 2
	;;
esac
