#!/usr/bin/env bash
# HTTPS servers whose certificate must not be trusted: one for another hostname only, one
# expired a day ago (each signed by its own test CA, which ferry is given), and a good one
# presented to ferry with another CA. Each mount fails closed: a non-zero exit, one clear line
# naming the certificate problem, nothing mounted and the mountpoint empty. The good server
# with its own CA still mounts and serves the source's bytes.
# (https_mount_needs_the_right_ca.sh covers no CA and a missing CA file.)
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" x.bin:1M d/y.bin:100K
mkdir -p "$T/m"

# serve_nginx passes its second argument unquoted to nginx.sh: "--tls KIND" is two arguments.
serve_nginx "$T/src" "--tls wrong-host"
WRONG_HOST_PORT=$PORT WRONG_HOST_CA=$CA
serve_nginx "$T/src" "--tls expired"
EXPIRED_PORT=$PORT EXPIRED_CA=$CA EXPIRED_STATE=$NGINX_STATE
serve_nginx "$T/src" --tls
GOOD_PORT=$PORT GOOD_CA=$CA
# The test's own certificates are what it says they are.
verdict=$(openssl verify -CAfile "$EXPIRED_CA" "$EXPIRED_STATE/server.pem" 2>&1 || true)
case "$verdict" in *"has expired"*) ;; *) fail "the expired certificate is not expired: $verdict" ;; esac

# fails_closed DESC URL CA: the mount fails cleanly with a line about the certificate.
fails_closed() {
	expect_clean_failure "$1" "$T/m" "$FERRY" mount --cache-dir "$T/cache-${1// /-}" \
		--ca-file "$3" "$2" "$T/m"
	grep -qiE "certificate|tls|ssl|verif" "$T/.err" ||
		fail "$1: the error line does not say it is the certificate: $(cat "$T/.err")"
	[ -z "$(ls -A "$T/m")" ] || fail "$1: a failed mount left files in the mountpoint"
}

log "a certificate for another hostname, by IP and by name"
fails_closed "hostname mismatch by IP" "https://127.0.0.1:$WRONG_HOST_PORT/" "$WRONG_HOST_CA"
fails_closed "hostname mismatch by name" "https://localhost:$WRONG_HOST_PORT/" "$WRONG_HOST_CA"
log "an expired certificate"
fails_closed "expired" "https://127.0.0.1:$EXPIRED_PORT/" "$EXPIRED_CA"
log "a good certificate checked against another CA"
fails_closed "wrong CA" "https://127.0.0.1:$GOOD_PORT/" "$EXPIRED_CA"
log "a single-file URL fails closed the same way"
fails_closed "expired single file" "https://127.0.0.1:$EXPIRED_PORT/x.bin" "$EXPIRED_CA"

log "the good certificate with its CA mounts and serves the source"
mount_ferry "https://localhost:$GOOD_PORT/" "$T/mnt" --ca-file "$GOOD_CA"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"
pass
