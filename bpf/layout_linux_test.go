//go:build linux

package bpf

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
)

// TestKeyLayoutMatchesBTF checks the Go mirrors of the map structs against
// the compiled objects (no root needed: only the ELF is read).
func TestKeyLayoutMatchesBTF(t *testing.T) {
	want := map[string][2]int{
		"endpoints":    {binary.Size(endpointKey{}), binary.Size(endpointInfo{})},
		"lxc_devices":  {4, binary.Size(endpointInfo{})},
		"ipcache":      {binary.Size(ipcacheKey{}), binary.Size(remoteInfo{})},
		"ipcache_host": {binary.Size(ipcacheHostKey{}), binary.Size(remoteInfo{})},
		"ingress_seen": {binary.Size(seenKey{}), 8},
		"metrics":      {4, 8},
		"policy":       {binary.Size(policyKey{}), binary.Size(policyValue{})},
		"ct":           {binary.Size(ctKey{}), binary.Size(ctEntry{})},
		"fragments":    {binary.Size(fragKey{}), binary.Size(fragPorts{})},
	}
	for _, load := range []func() (*ebpf.CollectionSpec, error){loadLxc, loadOverlay, loadUnderlay} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		for name, kv := range want {
			m, ok := spec.Maps[name]
			if !ok {
				t.Errorf("object lacks map %s", name)
				continue
			}
			if int(m.KeySize) != kv[0] || int(m.ValueSize) != kv[1] {
				t.Errorf("map %s: key %d value %d bytes in C; Go has %d and %d", name, m.KeySize, m.ValueSize, kv[0], kv[1])
			}
			if m.Pinning != ebpf.PinByName {
				t.Errorf("map %s is not pinned by name", name)
			}
		}
		// Host entries in a hash, shorter prefixes in the trie (keys.go).
		for name, typ := range map[string]ebpf.MapType{"ipcache": ebpf.LPMTrie, "ipcache_host": ebpf.Hash} {
			if m, ok := spec.Maps[name]; ok && m.Type != typ {
				t.Errorf("map %s is a %s; want %s", name, m.Type, typ)
			}
		}
		for _, v := range []string{"cfg_mode", "cfg_underlay_ifindex", "cfg_node_ipv4", "cfg_geneve_port", "cfg_ct_tcp_ns", "cfg_ct_other_ns"} {
			if vs, ok := spec.Variables[v]; !ok || !vs.Constant() {
				t.Errorf("setting %s is not a load-time constant", v)
			}
		}
	}
}
