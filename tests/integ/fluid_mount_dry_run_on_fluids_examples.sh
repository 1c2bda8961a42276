#!/usr/bin/env bash
# `ferry fluid-mount --dry-run` on the mount descriptions Fluid hands a ThinRuntime's FUSE
# container (tests/integ/fixtures/fluid, sources in SOURCES.md there: Fluid's own test config,
# the cephfs addon's JSON, the minio sample and the secret-storage test rewritten as config.json)
# prints the `ferry mount` command it would run: sources mapped (minio:// -> s3:// with path
# addressing on minio-url), credentials read from the secret files Fluid mounts and never
# printed, the ThinRuntime's options winning over the Dataset's, unknown options named on
# stderr one line each, an unsupported mountPoint refused in one line.
. "$(dirname "$0")/lib.sh"
build_has FLUID || skip "this build has no ferry fluid-mount (-Dfluid=disabled or no jansson)"
need_built "$FERRY"
FX=$FERRY_SRC/tests/integ/fixtures/fluid

# dry NAME CONFIG [ARGS]: runs the dry run; stdout in $T/NAME.out, stderr in $T/NAME.err
dry() {
	local name=$1 cfg=$2 rc=0
	shift 2
	timeout 20 "$FERRY" fluid-mount --dry-run "$@" "$cfg" >"$T/$name.out" 2>"$T/$name.err" ||
		rc=$?
	echo "$rc" >"$T/$name.rc"
	[ "$rc" -lt 124 ] || fail "$name: killed or timed out (rc $rc)"
}
expect_cmd() { # NAME WANT: exit 0, stdout exactly WANT
	[ "$(cat "$T/$1.rc")" = 0 ] || { cat "$T/$1.err" >&2; fail "$1: exit $(cat "$T/$1.rc")"; }
	[ "$(cat "$T/$1.out")" = "$2" ] ||
		fail "$1: printed '$(cat "$T/$1.out")', want '$2'"
	log "ok: $1: $2"
}

# Fluid's own test config: an https source, nothing else.
dry zookeeper "$FX/zookeeper_https.json"
expect_cmd zookeeper "ferry mount -f -o allow_other https://mirrors.bit.edu.cn/apache/zookeeper/stable/ /thin/default/test/thin-fuse"
[ ! -s "$T/zookeeper.err" ] || fail "zookeeper: stderr: $(cat "$T/zookeeper.err")"

# Secret storage: credentials inline in the options, passed as AWS_* and shown as <secret>.
dry s3 "$FX/s3_secret_storage.json"
expect_cmd s3 "AWS_ACCESS_KEY_ID=<secret> AWS_SECRET_ACCESS_KEY=<secret> ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/fluid/thin-test --endpoint https://minio.example.com s3://bucket/data /runtime-mnt/thin/fluid/thin-test/thin-fuse"
grep -q "test-ak\|test-sk" "$T/s3.out" "$T/s3.err" && fail "s3: a credential was printed"

# The minio sample: the secrets are files under the secrets dir (here $T/secrets in place of
# /etc/fluid/secrets, the same config otherwise).
mkdir -p "$T/secrets/minio-secret"
printf 'minioadmin\n' >"$T/secrets/minio-secret/minio-access-key"
printf 'miniopass' >"$T/secrets/minio-secret/minio-access-secret"
sed "s#/etc/fluid/secrets#$T/secrets#g" "$FX/minio_sample.json" >"$T/minio.json"
dry minio "$T/minio.json" --secrets-dir "$T/secrets"
expect_cmd minio "AWS_ACCESS_KEY_ID=<secret from $T/secrets/minio-secret/minio-access-key> AWS_SECRET_ACCESS_KEY=<secret from $T/secrets/minio-secret/minio-access-secret> ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/default/minio-demo --endpoint http://minio:9000 --addressing path s3://my-first-bucket /runtime-mnt/thin/default/minio-demo/thin-fuse"
grep -q "minioadmin\|miniopass" "$T/minio.out" "$T/minio.err" && fail "minio: a credential was printed"
# Kubernetes' Secret volume layout: KEY -> ..data/KEY, ..data -> ..TIMESTAMP (inside the dir);
# two names of one variable: the last one given wins.
mkdir -p "$T/secrets/kube/..2026_01_01" && echo kubeak >"$T/secrets/kube/..2026_01_01/ak"
ln -s ..2026_01_01 "$T/secrets/kube/..data" && ln -s ..data/ak "$T/secrets/kube/ak"
printf '%s' '{"mounts":[{"mountPoint":"s3://b/p","options":{"aws-access-key-id":"inline","access-key-id":"'"$T/secrets/kube/ak"'"}}],"targetPath":"/t"}' >"$T/kube.json"
dry kube "$T/kube.json" --secrets-dir "$T/secrets"
expect_cmd kube "AWS_ACCESS_KEY_ID=<secret from $T/secrets/kube/ak> ferry mount -f -o allow_other s3://b/p /t"

# A secret file Fluid did not mount: one line, no command.
rm "$T/secrets/minio-secret/minio-access-secret"
dry minio_gone "$T/minio.json" --secrets-dir "$T/secrets"
[ "$(cat "$T/minio_gone.rc")" != 0 ] || fail "minio_gone: exit 0 without its secret file"
[ "$(grep -c . "$T/minio_gone.err")" = 1 ] && [ ! -s "$T/minio_gone.out" ] ||
	fail "minio_gone: want one line on stderr, nothing on stdout: $(cat "$T/minio_gone.err")"
grep -q "minio-access-secret.*No such file" "$T/minio_gone.err" ||
	fail "minio_gone: $(cat "$T/minio_gone.err")"

# The cephfs addon's config: seven options ferry does not know (one line each, values never
# shown: `key` is a secret), then the ceph:// source is refused in one line.
dry ceph "$FX/cephfs_addon.json"
[ "$(cat "$T/ceph.rc")" = 1 ] || fail "ceph: exit $(cat "$T/ceph.rc"), want 1"
for k in key fsid mon_initial_members mon_host auth_cluster_required auth_service_required \
	auth_client_required; do
	[ "$(grep -c "unknown option '$k' in mounts\[0\].options, ignored" "$T/ceph.err")" = 1 ] ||
		fail "ceph: option $k not reported once: $(cat "$T/ceph.err")"
done
grep -q "<key>" "$T/ceph.err" && fail "ceph: an option's value was printed"
[ "$(wc -l <"$T/ceph.err")" = 8 ] || fail "ceph: want 8 lines on stderr: $(cat "$T/ceph.err")"
tail -n1 "$T/ceph.err" | grep -q "mountPoint 'ceph://<IP:Port>': ferry mounts http://, https://, s3://, minio:// and local:// sources" ||
	fail "ceph: last line: $(tail -n1 "$T/ceph.err")"
log "ok: ceph: 7 unknown options named, ceph:// refused"

# Every ferry option, both spellings, the ThinRuntime's fuse options winning over the
# Dataset's, Fluid's own fluid.fuse.* options passed over, a local:// source under the
# operator's --local-root, a query redacted.
mkdir -p "$T/srv/data"
cat >"$T/all.json" <<JSON
{"mounts":[{"mountPoint":"local://$T/srv/data","name":"d","path":"/d","readOnly":true,
 "options":{"cache-dir":"/dataset/cache","cache_size":"10G","chunk-size":"1M","ca-file":"/ca.pem",
  "metadata-ttl":"30m","max-transfers":"32","dir-readahead":"8","stall-timeout":"20s",
  "metrics-addr":"127.0.0.1:9464",
  "region":"eu-1","profile":"p","shared-cache":"s3://tier/x","shared-endpoint":"http://t:7480",
  "shared-region":"r2","shared-profile":"sp","shared-write-memory":"128M",
  "no-sign-request":"","allow-outside-symlinks":"false","Verbose":"true",
  "fluid.fuse.hostvolume":"/mnt/host","colour":"blue"}}],
 "runtimeOptions":{"cache-dir":"/runtime/cache","cache-size":"20G"},
 "targetPath":"/runtime-mnt/thin/ns/all/thin-fuse","accessModes":["ReadWriteMany"]}
JSON
dry all "$T/all.json" --local-root "$T/srv"
expect_cmd all "ferry mount -f -o allow_other --cache-dir /runtime/cache --cache-size 20G --chunk-size 1M --ca-file /ca.pem --metadata-ttl 30m --max-transfers 32 --dir-readahead 8 --stall-timeout 20s --metrics-addr 127.0.0.1:9464 --region eu-1 --profile p --shared-cache s3://tier/x --shared-endpoint http://t:7480 --shared-region r2 --shared-profile sp --shared-write-memory 128M --no-sign-request --verbose $T/srv/data /runtime-mnt/thin/ns/all/thin-fuse"
grep -q "unknown option 'colour' in mounts\[0\].options, ignored" "$T/all.err" ||
	fail "all: colour not reported: $(cat "$T/all.err")"
grep -q "accessModes ReadWriteMany: a ferry mount is read-only" "$T/all.err" ||
	fail "all: ReadWriteMany not reported: $(cat "$T/all.err")"
[ "$(wc -l <"$T/all.err")" = 2 ] || fail "all: want 2 lines on stderr: $(cat "$T/all.err")"

printf '%s' '{"mounts":[{"mountPoint":"https://h/d/?token=s3cr3t&x=1","name":"q"}],"targetPath":"/t"}' >"$T/q.json"
dry query "$T/q.json"
expect_cmd query "ferry mount -f -o allow_other 'https://h/d/?REDACTED' /t"

# Only a credential is read from the secrets dir: any other option under it is taken as it
# is (a CA certificate mounted from a Secret is a path for --ca-file, and an endpoint or a
# cache-size naming a secret file must not print the secret).
mkdir -p "$T/secrets/s" && printf 'topsecret' >"$T/secrets/s/secret"
printf '%s' '{"mounts":[{"mountPoint":"s3://b/p","options":{"endpoint":"'"$T/secrets/s/secret"'","ca-file":"'"$T/secrets/s/ca.crt"'","access-key-id":"'"$T/secrets/s/secret"'"}}],"targetPath":"/t"}' >"$T/lit.json"
dry literal "$T/lit.json" --secrets-dir "$T/secrets"
expect_cmd literal "AWS_ACCESS_KEY_ID=<secret from $T/secrets/s/secret> ferry mount -f -o allow_other --ca-file $T/secrets/s/ca.crt --endpoint $T/secrets/s/secret s3://b/p /t"
grep -q topsecret "$T/literal.out" "$T/literal.err" && fail "literal: the secret was printed"

# Each Dataset caches in its own directory, named after Fluid's targetPath (a byte outside
# [A-Za-z0-9._-] and a leading dot made '_'); a cache-dir option wins; another targetPath
# keeps ferry's default.
printf '%s' '{"mounts":[{"mountPoint":"http://h/d/"}],"targetPath":"/runtime-mnt/thin/team-a/imagenet/thin-fuse"}' >"$T/ca.json"
dry cache_a "$T/ca.json"
expect_cmd cache_a "ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/team-a/imagenet http://h/d/ /runtime-mnt/thin/team-a/imagenet/thin-fuse"
printf '%s' '{"mounts":[{"mountPoint":"http://h/d/"}],"targetPath":"/runtime-mnt/thin/team-b/imagenet/thin-fuse"}' >"$T/cb.json"
dry cache_b "$T/cb.json"
expect_cmd cache_b "ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/team-b/imagenet http://h/d/ /runtime-mnt/thin/team-b/imagenet/thin-fuse"
printf '%s' '{"mounts":[{"mountPoint":"http://h/d/"}],"targetPath":"/runtime-mnt/thin/..x/a b*/thin-fuse"}' >"$T/cc.json"
dry cache_odd "$T/cc.json"
expect_cmd cache_odd "ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/_.x/a_b_ http://h/d/ '/runtime-mnt/thin/..x/a b*/thin-fuse'"
printf '%s' '{"mounts":[{"mountPoint":"http://h/d/","options":{"cache-dir":"/c"}}],"targetPath":"/runtime-mnt/thin/ns/n/thin-fuse"}' >"$T/cd.json"
dry cache_set "$T/cd.json"
expect_cmd cache_set "ferry mount -f -o allow_other --cache-dir /c http://h/d/ /runtime-mnt/thin/ns/n/thin-fuse"

# Two names of one option in one object: one line, the last one wins.
printf '%s' '{"mounts":[{"mountPoint":"http://h/d/","options":{"cache-size":"1G","cache_size":"2G"}}],"targetPath":"/t"}' >"$T/twice.json"
dry twice "$T/twice.json"
expect_cmd twice "ferry mount -f -o allow_other --cache-size 2G http://h/d/ /t"
[ "$(grep -c . "$T/twice.err")" = 1 ] && grep -q "'cache-size' and 'cache_size' set one option" "$T/twice.err" ||
	fail "twice: want one line: $(cat "$T/twice.err")"

# Control characters from the JSON are escaped on stderr: a key cannot forge a line.
printf '%s' '{"mounts":[{"mountPoint":"http://h/d/","options":{"col\nferry fluid-mount: FAKE LINE":"x"}}],"targetPath":"/t","accessModes":["RW\u001b[2J"]}' >"$T/ctl.json"
dry ctl "$T/ctl.json"
expect_cmd ctl "ferry mount -f -o allow_other http://h/d/ /t"
[ "$(wc -l <"$T/ctl.err")" = 2 ] || fail "ctl: want 2 lines: $(cat -A "$T/ctl.err")"
grep -q '^ferry fluid-mount: FAKE' "$T/ctl.err" && fail "ctl: a forged line: $(cat "$T/ctl.err")"
grep -qF "unknown option 'col\x0aferry fluid-mount: FAKE LINE'" "$T/ctl.err" ||
	fail "ctl: key not escaped: $(cat -A "$T/ctl.err")"
grep -qF 'accessModes RW\x1b[2J:' "$T/ctl.err" || fail "ctl: mode not escaped: $(cat -A "$T/ctl.err")"

# A secret of 8 KiB is read; one byte more is refused.
head -c 8191 /dev/zero | tr '\0' k >"$T/secrets/s/k8191"
head -c 8192 /dev/zero | tr '\0' k >"$T/secrets/s/k8192"
head -c 8193 /dev/zero | tr '\0' k >"$T/secrets/s/k8193"
for n in 8191 8192 8193; do
	printf '%s' '{"mounts":[{"mountPoint":"s3://b/p","options":{"access-key-id":"'"$T/secrets/s/k$n"'"}}],"targetPath":"/t"}' >"$T/k$n.json"
	dry "k$n" "$T/k$n.json" --secrets-dir "$T/secrets"
done
expect_cmd k8191 "AWS_ACCESS_KEY_ID=<secret from $T/secrets/s/k8191> ferry mount -f -o allow_other s3://b/p /t"
expect_cmd k8192 "AWS_ACCESS_KEY_ID=<secret from $T/secrets/s/k8192> ferry mount -f -o allow_other s3://b/p /t"
[ "$(cat "$T/k8193.rc")" = 1 ] && grep -q "larger than 8 KiB" "$T/k8193.err" ||
	fail "k8193: want refused: $(cat "$T/k8193.err")"
pass
