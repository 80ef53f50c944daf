// Package bpf is Fabric's eBPF datapath on Linux: the C programs (one file
// per attach point, helpers under include/), their bpf2go bindings, the
// loader, and the pinned maps. It is the only package that imports
// cilium/ebpf.
//
// A node's datapath lives in one bpffs folder (Config.PinDir): its maps are
// pinned there by name and every TCX link is pinned under links/, so traffic
// keeps flowing while the agent restarts, and several lab nodes sharing one
// kernel never touch each other's objects. Open loads the programs, reusing
// the pinned maps and swapping the program of each pinned link in place;
// Apply makes the maps and the per-endpoint links match a desired State.
//
// The package does not create devices (the tunnel package owns the VXLAN
// device and the MTU), allocate addresses or identities, or know the store
// and gossip: it is handed endpoints and ipcache entries and forwards.
//
// # Programs
//
//   - lxc.c, TCX ingress of each workload veth's host side: answers ARP and
//     IPv6 neighbour solicitations with the host veth's MAC (so the CNI
//     plugin needs no static neighbour entry for either gateway), delivers to
//     local endpoints, and sends to remote ones by mode.
//   - overlay.c, TCX ingress of the VXLAN device: VNI → source identity,
//     delivery to the local endpoint.
//   - underlay.c, TCX ingress of the underlay interface: Geneve termination
//     (no geneve module exists on the target kernels) and native-mode
//     delivery with the source identity from the ipcache.
//
// Every delivery to a local endpoint passes the policy seam,
// policy_ingress in include/policy.h, with the resolved source identity.
package bpf
