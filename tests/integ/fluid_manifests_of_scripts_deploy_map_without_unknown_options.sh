#!/usr/bin/env bash
# The manifests of scripts/deploy/fluid parse, and what they ask of ferry is understood: for
# each Dataset + ThinRuntime pair, the config.json Fluid would write from them (as
# pkg/ddc/thin/transform_config.go builds it: the Dataset's mounts, encryptOptions as paths of
# /etc/fluid/secrets/SECRET/KEY, the ThinRuntime's fuse options as runtimeOptions, targetPath
# /runtime-mnt/thin/NAMESPACE/NAME/thin-fuse), and the DaemonSet's own ConfigMap, dry-run
# through `ferry fluid-mount` without a word on stderr, to the expected command.
. "$(dirname "$0")/lib.sh"
build_has FLUID || skip "this build has no ferry fluid-mount (-Dfluid=disabled or no jansson)"
need_built "$FERRY"
need_python yaml
D=$FERRY_SRC/scripts/deploy/fluid
mkdir -p "$T/cfg"
"$PY" - "$D" "$T/cfg" <<'PY' || fail "the manifests (above)"
import json, os, sys, yaml
d, out = sys.argv[1], sys.argv[2]
docs = {}
for f in sorted(os.listdir(d)):
    if f.endswith(".yaml"):
        for doc in yaml.safe_load_all(open(os.path.join(d, f))):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
prof = docs[("ThinRuntimeProfile", "ferry")]
assert prof["spec"]["fuse"]["command"] == ["ferry", "fluid-mount"], prof["spec"]["fuse"]
assert prof["spec"]["fileSystemType"] == "fuse.ferry"
for (kind, name), ds in docs.items():
    if kind != "Dataset":
        continue
    rt = docs[("ThinRuntime", name)]
    assert rt["spec"]["profileName"] == "ferry", name
    mounts = []
    for m in ds["spec"]["mounts"]:
        opts = {k: str(v) for k, v in m.get("options", {}).items()}
        for e in m.get("encryptOptions", []):
            ref = e["valueFrom"]["secretKeyRef"]
            opts[e["name"]] = "/etc/fluid/secrets/%s/%s" % (ref["name"], ref["key"])
        mounts.append({k: v for k, v in (("mountPoint", m["mountPoint"]), ("name", m.get("name")), ("options", opts)) if v})
    cfg = {"mounts": mounts, "targetPath": "/runtime-mnt/thin/default/%s/thin-fuse" % name,
           "accessModes": ds["spec"].get("accessModes", ["ReadOnlyMany"])}
    ropts = rt["spec"].get("fuse", {}).get("options")
    if ropts:
        for k, v in ropts.items():
            assert isinstance(v, str), "ThinRuntime %s: option %s is not a string (Fluid's options are map[string]string)" % (name, k)
        cfg["runtimeOptions"] = ropts
    json.dump(cfg, open(os.path.join(out, name + ".json"), "w"))
cm = docs[("ConfigMap", "ferry-imagenet")]
open(os.path.join(out, "daemonset.json"), "w").write(cm["data"]["config.json"])
ds = docs[("DaemonSet", "ferry-imagenet")]
c = ds["spec"]["template"]["spec"]["containers"][0]
assert c["command"][:2] == ["ferry", "fluid-mount"] and c["securityContext"]["privileged"]
print("manifests: " + ", ".join("%s/%s" % k for k in sorted(docs)))
PY

expect() { # NAME WANT [ARGS]
	local name=$1 want=$2 rc=0
	shift 2
	"$FERRY" fluid-mount --dry-run "$@" "$T/cfg/$name.json" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" = 0 ] && [ ! -s "$T/err" ] || fail "$name: exit $rc, stderr: $(cat "$T/err")"
	[ "$(cat "$T/out")" = "$want" ] || fail "$name: '$(cat "$T/out")', want '$want'"
	log "ok: $name: $want"
}
expect imagenet "ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/default/imagenet --cache-size 200G --chunk-size 8M --metadata-ttl 1h --max-transfers 32 https://datasets.example.com/imagenet/ /runtime-mnt/thin/default/imagenet/thin-fuse"
# the Secret's files, where Fluid would mount them, are made under $T
mkdir -p "$T/secrets/minio-secret"
echo minioadmin >"$T/secrets/minio-secret/minio-access-key"
echo minioadmin >"$T/secrets/minio-secret/minio-access-secret"
sed -i "s#/etc/fluid/secrets#$T/secrets#g" "$T/cfg/minio-demo.json"
S=$T/secrets/minio-secret
expect minio-demo "AWS_ACCESS_KEY_ID=<secret from $S/minio-access-key> AWS_SECRET_ACCESS_KEY=<secret from $S/minio-access-secret> ferry mount -f -o allow_other --cache-dir /var/cache/ferry/fluid/default/minio-demo --cache-size 50G --endpoint http://minio:9000 --addressing path s3://my-first-bucket /runtime-mnt/thin/default/minio-demo/thin-fuse" --secrets-dir "$T/secrets"
expect daemonset "ferry mount -f -o allow_other --cache-size 200G --metadata-ttl 1h https://datasets.example.com/imagenet/ /mnt/ferry/imagenet"
pass
