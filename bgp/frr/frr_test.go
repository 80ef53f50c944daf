package frr

import (
	"net/netip"
	"testing"
)

const tableJSON = `{"vrfId":0,"vrfName":"default","routerId":"10.77.0.1","defaultLocPrf":100,"localAS":65000,"routes":{
"192.0.2.10/32":[{"valid":true,"multipath":true,"path":"65002","peerId":"10.77.2.2","nexthops":[{"ip":"10.77.2.2","afi":"ipv4","used":true}]},
{"valid":true,"bestpath":true,"path":"65001","peerId":"10.77.1.2","nexthops":[{"ip":"10.77.1.2","afi":"ipv4","used":true}]}],
"10.99.0.0/24":[{"valid":true,"bestpath":true,"path":"","peerId":"(unspec)","nexthops":[{"ip":"0.0.0.0"}]}]}}`

func TestParseRoutes(t *testing.T) {
	rs, err := ParseRoutes([]byte(tableJSON))
	if err != nil {
		t.Fatal(err)
	}
	lb := rs[netip.MustParsePrefix("192.0.2.10/32")]
	if len(lb) != 2 || !lb[0].Multipath || !lb[1].Best || lb[1].NextHops[0] != netip.MustParseAddr("10.77.1.2") {
		t.Errorf("192.0.2.10/32: %+v", lb)
	}
	if len(rs[netip.MustParsePrefix("10.99.0.0/24")]) != 1 {
		t.Errorf("10.99.0.0/24 missing: %+v", rs)
	}
}

func TestParseSummary(t *testing.T) {
	in := `{"ipv4Unicast":{"peers":{"10.77.1.2":{"state":"Established","pfxRcd":3}}},"ipv6Unicast":{"peers":{"fd00:77:1::2":{"state":"Active","pfxRcd":0}}}}`
	ps, err := ParseSummary([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if ps["10.77.1.2"] != (Peer{State: "Established", PfxRcd: 3}) || ps["fd00:77:1::2"].State != "Active" {
		t.Errorf("ParseSummary = %+v", ps)
	}
}

// FRR's JSON is outside input to the lab and the benchmark.
func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte(tableJSON))
	f.Add([]byte(`{"routes":{"x":[]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseRoutes(b)
		ParseSummary(b)
	})
}
