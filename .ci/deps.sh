#!/usr/bin/env bash
# Installs what Fabric's build, tests and lab need from Debian's packages,
# only what is missing, so a second run takes well under a second.
# Usage: .ci/deps.sh [bench|generate]   (bench also installs the baselines: etcd;
# generate installs clang and libbpf headers for the eBPF programs)
set -euo pipefail

need=()
want() { # want COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || need+=("$2")
}
want ip iproute2
want ping iputils-ping
want sysctl procps
want bridge iproute2
want tcpdump tcpdump
want iperf3 iperf3
if [ "${1:-}" = generate ]; then
	want clang clang
	want llvm-strip llvm
	[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
fi
if [ "${1:-}" = bench ]; then
	want etcd etcd-server
	want etcdctl etcd-client
fi

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	need+=(golang-go)
fi

if [ ${#need[@]} -gt 0 ]; then
	# shellcheck disable=SC2207
	need=($(printf '%s\n' "${need[@]}" | sort -u))
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
