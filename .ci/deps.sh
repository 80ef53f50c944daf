#!/usr/bin/env bash
# Installs what Fabric's build, tests and lab need from Debian's packages,
# only what is missing, so a second run takes well under a second.
# Usage: .ci/deps.sh [bench|generate]   (bench also installs the baselines: etcd, gobgpd,
# iptables and nftables;
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
want arping iputils-arping
want ndisc6 ndisc6
# FRR is the router the bgp package's tests peer with (its daemons are not on PATH).
[ -x /usr/lib/frr/bgpd ] || need+=(frr)
if [ "${1:-}" = generate ]; then
	want clang clang
	want llvm-strip llvm
	[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
fi
if [ "${1:-}" = bench ]; then
	want etcd etcd-server
	want etcdctl etcd-client
	want gobgpd gobgpd
	# The services benchmark's baselines: kube-proxy-style rules.
	want iptables-restore iptables
	want nft nftables
fi

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	need+=(golang-go)
fi

if [ ${#need[@]} -gt 0 ]; then
	# shellcheck disable=SC2207
	need=($(printf '%s\n' "${need[@]}" | sort -u))
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# FRR, etcd and gobgpd are daemons the tests and benchmarks start
	# themselves, inside namespaces; their packages must not start them in
	# the machine's own namespace. policy-rc.d (exit 101) forbids it for the
	# length of the install, unless the machine already has one.
	own_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	if [ -n "$own_policy" ]; then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
fi
