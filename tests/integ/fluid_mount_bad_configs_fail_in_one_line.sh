#!/usr/bin/env bash
# A config.json that is not what Fluid writes (malformed JSON, not an object, no or two
# mounts, no mountPoint or targetPath, options that are not strings, a minio:// source without
# its endpoint, a missing file, a pvc:// source) makes `ferry fluid-mount` print one line and
# exit non-zero, with nothing mounted and no command printed; so do bad arguments.
. "$(dirname "$0")/lib.sh"
build_has FLUID || skip "this build has no ferry fluid-mount (-Dfluid=disabled or no jansson)"
need_built "$FERRY"
M=$T/mnt
mkdir -p "$M"

bad() { # DESC JSON [WANT]: the config JSON fails in one line (containing WANT)
	local desc=$1 json=$2 want=${3:-}
	printf '%s' "$json" >"$T/c.json"
	expect_clean_failure "$desc" "$M" "$FERRY" fluid-mount "$T/c.json"
	[ -z "$want" ] || grep -qF -- "$want" "$T/.err" || fail "$desc: want '$want' in: $(cat "$T/.err")"
	grep -q '^ferry fluid-mount: ' "$T/.err" || fail "$desc: not a ferry fluid-mount line"
	[ ! -s "$T/.out" ] || fail "$desc: printed '$(cat "$T/.out")'"
	# the dry run refuses it the same way
	expect_clean_failure "$desc (--dry-run)" "$M" "$FERRY" fluid-mount --dry-run "$T/c.json"
	[ ! -s "$T/.out" ] || fail "$desc --dry-run: printed '$(cat "$T/.out")'"
}
ok_mount='{"mountPoint":"http://127.0.0.1:1/d/","name":"d"}'

bad "empty file" "" "not valid JSON"
bad "truncated JSON" '{"mounts":[{"mountPoint":"http://h/"}],"targetPath":"/t"' "not valid JSON"
bad "trailing garbage" '{"mounts":[],"targetPath":"/t"} x' "not valid JSON"
bad "duplicate key" '{"mounts":[],"mounts":[],"targetPath":"/t"}' "not valid JSON"
bad "an array" '[1,2]' "expected a JSON object"
bad "a string" '"mounts"' "not valid JSON"
bad "no mounts" '{"targetPath":"'"$M"'"}' 'no "mounts" array'
bad "mounts not an array" '{"mounts":{},"targetPath":"'"$M"'"}' 'no "mounts" array'
bad "zero mounts" '{"mounts":[],"targetPath":"'"$M"'"}' "0 mounts"
bad "two mounts" '{"mounts":['"$ok_mount,$ok_mount"'],"targetPath":"'"$M"'"}' "2 mounts"
bad "mount not an object" '{"mounts":["http://h/"],"targetPath":"'"$M"'"}' "mounts[0]: expected an object"
bad "no mountPoint" '{"mounts":[{"name":"d"}],"targetPath":"'"$M"'"}' 'no "mountPoint"'
bad "empty mountPoint" '{"mounts":[{"mountPoint":""}],"targetPath":"'"$M"'"}' 'no "mountPoint"'
bad "mountPoint a number" '{"mounts":[{"mountPoint":7}],"targetPath":"'"$M"'"}' 'no "mountPoint"'
bad "no targetPath" '{"mounts":['"$ok_mount"']}' 'no absolute "targetPath"'
bad "relative targetPath" '{"mounts":['"$ok_mount"'],"targetPath":"mnt"}' 'no absolute "targetPath"'
bad "options not an object" '{"mounts":[{"mountPoint":"http://h/","options":"a=b"}],"targetPath":"'"$M"'"}' "mounts[0].options: expected an object"
bad "option value a number" '{"mounts":[{"mountPoint":"http://h/","options":{"cache-size":10}}],"targetPath":"'"$M"'"}' "mounts[0].options.cache-size: expected a string"
bad "runtimeOptions value null" '{"mounts":['"$ok_mount"'],"runtimeOptions":{"cache-dir":null},"targetPath":"'"$M"'"}' "runtimeOptions.cache-dir: expected a string"
bad "boolean option 'yes'" '{"mounts":[{"mountPoint":"http://h/","options":{"verbose":"yes"}}],"targetPath":"'"$M"'"}' "expected true, false or nothing"
bad "accessModes not an array" '{"mounts":['"$ok_mount"'],"accessModes":"ReadOnlyMany","targetPath":"'"$M"'"}' '"accessModes": expected an array'
bad "minio without its url" '{"mounts":[{"mountPoint":"minio://bucket"}],"targetPath":"'"$M"'"}' "needs the option minio-url"
bad "minio without a bucket" '{"mounts":[{"mountPoint":"minio://","options":{"minio-url":"http://m:9000"}}],"targetPath":"'"$M"'"}' "expected minio://BUCKET"
bad "pvc source" '{"mounts":[{"mountPoint":"pvc://claim"}],"targetPath":"'"$M"'"}' "ferry mounts http://"
bad "relative local source" '{"mounts":[{"mountPoint":"local://srv"}],"targetPath":"'"$M"'"}' "expected local:///ABSOLUTE/PATH"
bad "local source without --local-root" '{"mounts":[{"mountPoint":"local:///var/cache/ferry"}],"targetPath":"'"$M"'"}' "local sources are off"
bad "allow-outside-symlinks from the Dataset" '{"mounts":[{"mountPoint":"http://h/","options":{"allow-outside-symlinks":"true"}}],"targetPath":"'"$M"'"}' "allow-outside-symlinks: not allowed from a Dataset"
bad "allow_outside_symlinks from the ThinRuntime" '{"mounts":['"$ok_mount"'],"runtimeOptions":{"allow_outside_symlinks":""},"targetPath":"'"$M"'"}' "not allowed from a Dataset"
bad "a newline in an option's value" '{"mounts":[{"mountPoint":"http://h/","options":{"cache-size":"1G\nferry mount: FAKE"}}],"targetPath":"'"$M"'"}' "a control character in the value"
bad "a newline in the targetPath" '{"mounts":['"$ok_mount"'],"targetPath":"'"$M"'\nx"}' "a control character in the mountPoint or targetPath"
bad "secret file missing" '{"mounts":[{"mountPoint":"s3://b/p","options":{"access-key-id":"/etc/fluid/secrets/no-such-secret-'$$'/k"}}],"targetPath":"'"$M"'"}' "cannot read /etc/fluid/secrets/no-such-secret-$$/k"

# A secret path that climbs out of the secrets dir, by .. or by a symlink, is refused.
mkdir -p "$T/secrets/s"
echo "not a secret" >"$T/outside"
ln -s "$T/outside" "$T/secrets/s/link"
printf '%s' '{"mounts":[{"mountPoint":"s3://b/p","options":{"access-key-id":"'"$T/secrets/s/../../outside"'"}}],"targetPath":"'"$M"'"}' >"$T/c.json"
expect_clean_failure "secret path with .." "$M" "$FERRY" fluid-mount --secrets-dir "$T/secrets" "$T/c.json"
grep -q "leads out of the secrets dir" "$T/.err" || fail "secret path with ..: $(cat "$T/.err")"
sed -i "s#$T/secrets/s/../../outside#$T/secrets/s/link#" "$T/c.json"
expect_clean_failure "secret path through a symlink" "$M" "$FERRY" fluid-mount --dry-run --secrets-dir "$T/secrets" "$T/c.json"
grep -q "leads out of the secrets dir" "$T/.err" || fail "secret symlink: $(cat "$T/.err")"

# local:// only under --local-root, by the real path: not outside, not by .., not through a
# symlink, and a root holding the cache dir is refused.
mkdir -p "$T/root/data" "$T/elsewhere" "$T/root/cache"
ln -s "$T/elsewhere" "$T/root/link"
local_bad() { # DESC MOUNTPOINT WANT [OPTIONS]
	printf '%s' '{"mounts":[{"mountPoint":"'"$2"'","options":{'"${4:-}"'}}],"targetPath":"'"$M"'"}' >"$T/c.json"
	expect_clean_failure "$1" "$M" "$FERRY" fluid-mount --dry-run --local-root "$T/root" "$T/c.json"
	grep -qF -- "$3" "$T/.err" || fail "$1: want '$3' in: $(cat "$T/.err")"
	[ ! -s "$T/.out" ] || fail "$1: printed '$(cat "$T/.out")'"
}
local_bad "local source outside the root" "local://$T/elsewhere" "not under --local-root"
local_bad "local source by .." "local://$T/root/../elsewhere" "'..' in the path"
local_bad "local source through a symlink" "local://$T/root/link" "not under --local-root"
local_bad "local root holding the cache dir" "local://$T/root/data" "holds or lies in the cache dir" '"cache-dir":"'"$T/root/cache"'"'
expect_clean_failure "--local-root without a dir" "$M" "$FERRY" fluid-mount --local-root

expect_clean_failure "config file missing" "$M" "$FERRY" fluid-mount "$T/no-such.json"
grep -q "No such file or directory" "$T/.err" || fail "config file missing: $(cat "$T/.err")"
expect_clean_failure "config is a directory" "$M" "$FERRY" fluid-mount "$T"
grep -q "Is a directory" "$T/.err" || fail "config is a directory: $(cat "$T/.err")"
expect_clean_failure "unknown argument" "$M" "$FERRY" fluid-mount --frobnicate "$T/c.json"
expect_clean_failure "two configs" "$M" "$FERRY" fluid-mount "$T/c.json" "$T/c.json"
expect_clean_failure "--secrets-dir without a dir" "$M" "$FERRY" fluid-mount --secrets-dir

# A real mount's failure is ferry mount's one line: a bad --cache-size from the ThinRuntime.
printf '%s' '{"mounts":[{"mountPoint":"http://127.0.0.1:1/d/"}],"runtimeOptions":{"cache-size":"lots"},"targetPath":"'"$M"'"}' >"$T/c.json"
expect_clean_failure "bad cache-size" "$M" "$FERRY" fluid-mount "$T/c.json"
grep -q "^ferry mount: --cache-size" "$T/.err" || fail "bad cache-size: $(cat "$T/.err")"
# A value naming a file under the secrets dir is that path, not the file's content: ferry
# mount's error line names the path and never the secret.
mkdir -p "$T/secrets/s" && printf 'topsecret' >"$T/secrets/s/secret"
printf '%s' '{"mounts":[{"mountPoint":"http://127.0.0.1:1/d/","options":{"cache-size":"'"$T/secrets/s/secret"'"}}],"targetPath":"'"$M"'"}' >"$T/c.json"
expect_clean_failure "cache-size naming a secret" "$M" "$FERRY" fluid-mount --secrets-dir "$T/secrets" "$T/c.json"
grep -q topsecret "$T/.err" && fail "cache-size naming a secret: printed it: $(cat "$T/.err")"
grep -qF "$T/secrets/s/secret" "$T/.err" || fail "cache-size naming a secret: $(cat "$T/.err")"
pass
