#!/usr/bin/env bash
# Starts and stops a private nginx on a free loopback port for tests and benchmarks.
#   nginx.sh start STATE_DIR DOCROOT [--tls [CERT]]
#                                              prints the port; with --tls makes a test CA
#                                              (STATE_DIR/ca.pem) and serves HTTPS for
#                                              127.0.0.1 and localhost; CERT wrong-host:
#                                              the CA's certificate is for another name
#                                              (wrong-host.invalid) only; CERT expired: for
#                                              the right names, expired a day ago
#   nginx.sh stop STATE_DIR
# With NGINX_OWNER=PID in the environment, nginx is also stopped once that process has exited,
# however it ended: nginx daemonizes into its own session, so a test killed by its timeout
# (meson kills the test's process group) would otherwise leave it running.
# Autoindex, byte ranges, ETags and If-Match are nginx's defaults; logs stay in STATE_DIR.
set -euo pipefail

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

make_ca() { # dir [cert: "", wrong-host or expired]
	local d=$1 cert=${2:-} cn=127.0.0.1 san="IP:127.0.0.1,DNS:localhost" days=2
	case "$cert" in
	"") ;;
	wrong-host) cn=wrong-host.invalid san=DNS:wrong-host.invalid ;;
	# OpenSSL 3.0 takes a negative count: notAfter a day before notBefore (now).
	expired) days=-1 ;;
	*) echo "nginx.sh: unknown certificate kind '$cert'" >&2; return 1 ;;
	esac
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferry test CA" \
		-keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" \
		-keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
	printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$san" >"$d/ext.cnf"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days "$days" -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
}

start() {
	local state=$1 root=$2 tls=${3:-} cert=${4:-}
	mkdir -p "$state"
	state=$(cd "$state" && pwd)
	root=$(cd "$root" && pwd)
	local listen ssl=""
	# The watcher first: were this script killed while nginx starts, nginx would have none.
	[ -z "${NGINX_OWNER:-}" ] || stop_when_gone "$state" "$NGINX_OWNER"
	for try in 1 2 3 4 5; do
		local port
		port=$(free_port)
		listen="127.0.0.1:$port"
		if [ "$tls" = --tls ]; then
			[ -f "$state/server.pem" ] || make_ca "$state" "$cert"
			listen="$listen ssl"
			ssl="ssl_certificate $state/server.pem; ssl_certificate_key $state/server.key;"
		fi
		cat >"$state/nginx.conf" <<CONF
daemon on;
worker_processes 2;
pid $state/nginx.pid;
error_log $state/error.log warn;
events { worker_connections 1024; }
http {
	access_log $state/access.log;
	client_body_temp_path $state/tmp;
	proxy_temp_path $state/tmp;
	fastcgi_temp_path $state/tmp;
	uwsgi_temp_path $state/tmp;
	scgi_temp_path $state/tmp;
	types { }
	default_type application/octet-stream;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 100000;
	server_tokens off;
	server {
		listen $listen;
		$ssl
		root $root;
		autoindex on;
		autoindex_exact_size on;
		location / { }
	}
}
CONF
		mkdir -p "$state/tmp"
		if nginx -q -p "$state" -c "$state/nginx.conf" -g "user root;" 2>"$state/start.err"; then
			for _ in $(seq 50); do
				[ -s "$state/nginx.pid" ] && { echo "$port"; return 0; }
				sleep 0.05
			done
		fi
		grep -q "Address already in use" "$state/start.err" || { cat "$state/start.err" >&2; return 1; }
	done
	echo "nginx.sh: could not find a free port" >&2
	return 1
}

# stop_when_gone STATE_DIR PID: a watcher in its own session (out of reach of a kill of the
# caller's process group) stops the nginx of STATE_DIR, if any, once PID has exited (checked
# twice a second). The state dir travels in the environment, not in argv, so that harnesses
# that wait for processes naming their temp dir do not wait for the watcher.
stop_when_gone() {
	NGINX_WATCHED_STATE=$1 setsid -f bash -c \
		'tail --pid="$1" -s 0.5 -f /dev/null; exec bash "$0" stop "$NGINX_WATCHED_STATE"' \
		"$(realpath "${BASH_SOURCE[0]}")" "$2" </dev/null >/dev/null 2>&1
}

stop() {
	local state=$1 pid
	[ -s "$state/nginx.pid" ] || return 0
	pid=$(cat "$state/nginx.pid")
	kill -QUIT "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$state/nginx.pid"; return 0; }
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$state/nginx.pid"
}

case "${1:-}" in
start) shift; start "$@" ;;
stop) shift; stop "$@" ;;
*) echo "usage: nginx.sh start STATE_DIR DOCROOT [--tls [wrong-host|expired]] | stop STATE_DIR" >&2; exit 2 ;;
esac
