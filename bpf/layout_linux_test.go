//go:build linux

package bpf

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// goName is the Go field name of a C member: snake_case to CamelCase.
func goName(c string) string {
	var b strings.Builder
	for _, p := range strings.Split(c, "_") {
		if p != "" {
			b.WriteString(strings.ToUpper(p[:1]) + p[1:])
		}
	}
	return b.String()
}

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
		"lb_services":  {binary.Size(lbSvcKey{}), binary.Size(lbSvc{})},
		"lb_backends":  {4, binary.Size(lbBackend{})},
		"lb_maglev":    {4, 4},
		"lb_ct":        {binary.Size(ctKey{}), binary.Size(lbCTEntry{})},
		"lb_revnat":    {binary.Size(ctKey{}), binary.Size(lbRevnat{})},
		"lb_affinity":  {binary.Size(lbAffinityKey{}), binary.Size(lbAffinity{})},
		"lb_nat":       {binary.Size(ctKey{}), binary.Size(lbNAT{})},
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
		if m, ok := spec.Maps["flows"]; !ok || m.Type != ebpf.RingBuf || m.Pinning != ebpf.PinByName {
			t.Errorf("object lacks the pinned ring buffer flows (%v)", m)
		}
		var ev *btf.Struct
		if err := spec.Types.TypeByName("flow_event", &ev); err != nil {
			t.Errorf("struct flow_event: %v", err)
		} else if int(ev.Size) != binary.Size(flowEvent{}) || int(ev.Size) != flowEventSize {
			t.Errorf("struct flow_event is %d bytes in C; Go has %d (flowEventSize %d)", ev.Size, binary.Size(flowEvent{}), flowEventSize)
		} else {
			goT := reflect.TypeOf(flowEvent{})
			for i, m := range ev.Members {
				if f, ok := goT.FieldByName(goName(m.Name)); !ok || f.Offset != uintptr(m.Offset.Bytes()) || i >= goT.NumField() {
					t.Errorf("flow_event.%s at %d in C; Go field %v", m.Name, m.Offset.Bytes(), f)
				}
			}
		}
		if m := spec.Maps["lb_maglev"]; m == nil || m.Type != ebpf.HashOfMaps || m.InnerMap == nil ||
			m.InnerMap.Type != ebpf.Array || m.InnerMap.ValueSize != 4 {
			t.Errorf("lb_maglev is not a hash of arrays of backend ids: %v", m)
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
