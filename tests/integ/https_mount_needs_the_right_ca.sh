#!/usr/bin/env bash
# HTTPS with a private test CA: the right --ca-file mounts and serves the source's bytes;
# another CA, or none (system trust only), fails cleanly and leaves nothing mounted.
. "$(dirname "$0")/lib.sh"
need_fuse
make_tree "$T/src" x.bin:3M d/y.bin:100K d/empty:0
serve_nginx "$T/src" --tls

log "the right CA, by IP and by name"
mount_ferry "https://127.0.0.1:$PORT/" "$T/mnt" --ca-file "$CA"
same_tree "$T/src" "$T/mnt"
umount_ferry "$T/mnt"
mount_ferry "https://localhost:$PORT/d/" "$T/mnt" --ca-file "$CA" --cache-dir "$T/cache-name"
same_tree "$T/src/d" "$T/mnt"
umount_ferry "$T/mnt"

log "a wrong CA and no CA both fail"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferry test CA" \
	-keyout "$T/other.key" -out "$T/other.pem" 2>/dev/null
mkdir -p "$T/m2"
expect_clean_failure "wrong CA" "$T/m2" \
	"$FERRY" mount --cache-dir "$T/cache2" --ca-file "$T/other.pem" "https://127.0.0.1:$PORT/" "$T/m2"
expect_clean_failure "no CA" "$T/m2" \
	"$FERRY" mount --cache-dir "$T/cache3" "https://127.0.0.1:$PORT/" "$T/m2"
expect_clean_failure "missing CA file" "$T/m2" \
	"$FERRY" mount --cache-dir "$T/cache3" --ca-file "$T/nope.pem" "https://127.0.0.1:$PORT/" "$T/m2"
[ -z "$(ls -A "$T/m2")" ] || fail "a failed mount left files in the mountpoint"
pass
