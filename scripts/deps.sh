#!/usr/bin/env bash
# Installs what ferry needs to build, test and demo on Debian 12. Safe to run twice.
set -euo pipefail
pkgs=(
	build-essential meson ninja-build pkg-config
	libfuse3-dev fuse3 liburing-dev libcurl4-openssl-dev libssl-dev
	libxxhash-dev libexpat1-dev libcriterion-dev
	nginx-light curl openssl python3 python3-numpy python3-botocore
	python3-dev # Python.h: the ferry package's extension module ferry._fast (loader/meson.build)
	openmpi-bin libopenmpi-dev
	# tests/bench/bench_http.sh: random reads, and a PyTorch DataLoader through the mount
	fio python3-torch
	radosgw ceph-mon ceph-osd ceph-common
	# fuzzing (tests/fuzz): clang with libFuzzer, whose runtime is only recommended by
	# clang-14, and llvm-symbolizer for readable stacks in its reports
	clang libclang-rt-14-dev llvm-14
	clang-format # scripts/format.sh and the format suite: clang-format 14
	strace # tests/integ/train_mpi_zero2_resume_reads_only_the_shards_a_rank_needs.sh: each rank's opens
	# --metrics-addr: the HTTP server library, and promtool (in prometheus) for its tests
	libmicrohttpd-dev prometheus
	# Kubernetes (scripts/deploy, issue 15): ferry fluid-mount parses Fluid's config.json
	# with jansson; the image is a debootstrap root committed by buildah; the manifests'
	# test reads YAML
	libjansson-dev debootstrap buildah python3-yaml
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" -eq 0 ] || { echo "deps.sh: need root to install: ${missing[*]}" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# nginx-light's package starts a system nginx on port 80; the tests run their own.
systemctl disable --now nginx >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
# prometheus's package does the same with a Prometheus server on port 9090: the tests need only
# its promtool.
systemctl disable --now prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 ||
	true
