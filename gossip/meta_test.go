package gossip

import (
	"bytes"
	"encoding/base64"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func fullMeta() Meta {
	return Meta{
		Name:      "node-1",
		Cluster:   "lab",
		ClusterID: 7,
		Underlay:  []netip.Addr{netip.MustParseAddr("10.10.1.11"), netip.MustParseAddr("fd00::11")},
		PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24"), netip.MustParsePrefix("fd00:200:1::/64")},
		Roles:     []string{RoleServer},
		Version:   "v0.1.0",
		Health:    "degraded: raft lagging",
		APIAddr:   "10.10.1.11:7000",
		RaftAddr:  "10.10.1.11:7001",
	}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{fullMeta(), {Name: "n", Cluster: "c", ClusterID: 1}} {
		b, err := EncodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMeta(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", b, got, m)
		}
	}
	b, _ := EncodeMeta(fullMeta())
	t.Logf("full meta encodes to %d bytes: %s", len(b), b)
}

func TestMetaLimits(t *testing.T) {
	m := fullMeta()
	for i := range 40 {
		m.Underlay = append(m.Underlay, netip.AddrFrom4([4]byte{10, 10, 2, byte(i)}))
	}
	if _, err := EncodeMeta(m); err == nil || !strings.Contains(err.Error(), "512-byte limit") {
		t.Errorf("oversize meta: %v", err)
	}
	m = fullMeta()
	m.Underlay = append(m.Underlay, netip.Addr{})
	if _, err := EncodeMeta(m); err == nil {
		t.Error("invalid underlay address encoded")
	}
	for _, bad := range []string{
		"", "{}", `{"n":""}`, "null", `{"n":"a"} {}`, `{"n":"a","u":["nope"]}`,
		`{"n":"a","p":["10.0.0.0/33"]}`, `{"n":"a","p":[""]}`, `{"n":"a","i":-1}`,
		`{"n":"a","c":"` + strings.Repeat("x", 600) + `"}`,
	} {
		if m, err := DecodeMeta([]byte(bad)); err == nil {
			t.Errorf("DecodeMeta(%q) = %+v, want error", bad, m)
		}
	}
}

func TestLeavingMarkIsNotMeta(t *testing.T) {
	b, err := encodeMeta(fullMeta(), true)
	if err != nil {
		t.Fatal(err)
	}
	m, leaving, err := decodeMeta(b)
	if err != nil || !leaving || !reflect.DeepEqual(m, fullMeta()) {
		t.Errorf("decode leaving meta: %+v %v %v", m, leaving, err)
	}
}

// FuzzDecodeMeta: meta comes from the network, so decoding must never panic,
// and whatever decodes must encode and decode back to the same Meta.
func FuzzDecodeMeta(f *testing.F) {
	b, _ := EncodeMeta(fullMeta())
	f.Add(b)
	f.Add([]byte(`{"n":"a","c":"b","i":1,"l":true}`))
	f.Add([]byte(`{"n":"a","u":["fe80::1%eth0"],"p":["10.0.0.1/8"]}`))
	f.Add([]byte(`{"N":"\xff","n":"b"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMeta(data)
		if err != nil {
			return
		}
		b, err := EncodeMeta(m)
		if err != nil {
			// Decoding caps the input, but re-encoding may grow it
			// (escapes of invalid UTF-8); that is the only allowed failure.
			if !strings.Contains(err.Error(), "limit") {
				t.Fatalf("decoded meta %+v does not encode: %v", m, err)
			}
			return
		}
		m2, err := DecodeMeta(b)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", b, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed meta:\n%+v\n%+v", m, m2)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	for _, n := range []int{0, 15, 16, 24, 32, 33} {
		f.Add(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)))
	}
	f.Add("not base64!")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if k != nil {
				t.Fatalf("key returned with error %v", err)
			}
			return
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			t.Fatalf("accepted a %d-byte key", n)
		}
		if k2, err := ParseKey(base64.StdEncoding.EncodeToString(k)); err != nil || !bytes.Equal(k, k2) {
			t.Fatalf("key does not round trip: %v", err)
		}
	})
}

func TestParseKey(t *testing.T) {
	k := bytes.Repeat([]byte{3}, 32)
	got, err := ParseKey(" " + base64.StdEncoding.EncodeToString(k) + "\n")
	if err != nil || !bytes.Equal(got, k) {
		t.Errorf("ParseKey: %x %v", got, err)
	}
	for _, bad := range []string{"", "!!!", base64.StdEncoding.EncodeToString(make([]byte, 20))} {
		if _, err := ParseKey(bad); err == nil || !strings.Contains(err.Error(), "fabric keygen") {
			t.Errorf("ParseKey(%q) err = %v, want one naming the fix", bad, err)
		}
	}
}
