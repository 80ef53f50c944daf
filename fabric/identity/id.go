// Package identity owns security identities: the 32-bit numbers that stand
// for label sets, their allocation through the cluster store so that every
// node agrees on them, the references endpoints hold on them, and the garbage
// collection of identities no endpoint uses any more. It does not own policy,
// endpoints, or the copies of other clusters' identities (clustermesh).
//
// # Bit layout
//
// An identity is 32 bits:
//
//	 31        24 23        16 15                         0
//	+------------+------------+----------------------------+
//	| cluster hi | cluster lo |           local            |
//	+------------+------------+----------------------------+
//
//	identity = (clusterHigh << 24) | (clusterLow << 16) | local
//
// The cluster ID is 16 bits (1..65535): its low 8 bits are bits 16..23 and its
// high 8 bits are bits 24..31. The low byte sits next to the local number so
// that clusters 1..255 give identities below 2^24, which fit the 24-bit VXLAN
// VNI; clusters 256..65535 need more than 24 bits and so the Geneve option.
//
// Local numbers 1..255 are reserved in every cluster; 256..65535 are
// allocated from the store. The well-known reserved identities have cluster
// bits 0: 0 unknown/invalid, 1 host, 2 world, 3 unmanaged, 4 health, 5 init,
// 6 remote-node, 7 kube-apiserver, 8 ingress, 9 world-ipv4, 10 world-ipv6.
//
// # Store keys
//
//	identities/labels/<canonical labels>      decimal id
//	identities/ids/<id>                       JSON {labels, created_at}
//	identities/refs/<id>/<node>/<endpoint>    "" (an endpoint uses the identity)
package identity

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
)

// ID is a security identity. See the package comment for its bit layout.
type ID uint32

const (
	// MinLocal is the lowest local number allocated from the store; lower
	// ones are reserved in every cluster.
	MinLocal = 256
	// MaxClusterID is the highest cluster ID the layout can carry.
	MaxClusterID = 1<<16 - 1
)

// ClusterID returns the 16-bit cluster ID held in bits 16..31.
func (id ID) ClusterID() uint32 {
	return (uint32(id)>>24&0xff)<<8 | uint32(id)>>16&0xff
}

// Local returns the cluster-local number, bits 0..15.
func (id ID) Local() uint16 { return uint16(id) }

// IsReserved reports whether id is not allocated from the store: its local
// number is below MinLocal (this includes Unknown).
func (id ID) IsReserved() bool { return id.Local() < MinLocal }

// FitsVNI reports whether id fits the 24-bit VXLAN VNI (cluster ID <= 255).
func (id ID) FitsVNI() bool { return id < 1<<24 }

// String returns the identity in decimal, the form used in store keys, logs
// and the CLI.
func (id ID) String() string { return strconv.FormatUint(uint64(id), 10) }

// ParseID parses the decimal form String returns.
func ParseID(s string) (ID, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("identity %q is not a decimal 32-bit number: %w", s, err)
	}
	return ID(n), nil
}

// Make builds the identity of local number local in cluster clusterID.
// Cluster 0 is only for the well-known reserved identities (local < MinLocal).
func Make(clusterID uint32, local uint16) (ID, error) {
	switch {
	case clusterID > MaxClusterID:
		return 0, fmt.Errorf("cluster id %d is out of range; use 1..%d", clusterID, MaxClusterID)
	case local == 0:
		return 0, errors.New("local number 0 is the invalid identity; use 1..65535")
	case clusterID == 0 && local >= MinLocal:
		return 0, fmt.Errorf("cluster id 0 only carries reserved identities (local < %d); use the cluster's id 1..%d", MinLocal, MaxClusterID)
	}
	return ID((clusterID>>8)<<24 | (clusterID&0xff)<<16 | uint32(local)), nil
}

// The well-known reserved identities. Their numbers are part of the wire
// format: the datapath and other clusters rely on them.
const (
	Unknown       ID = 0
	Host          ID = 1
	World         ID = 2
	Unmanaged     ID = 3
	Health        ID = 4
	Init          ID = 5
	RemoteNode    ID = 6
	KubeAPIServer ID = 7
	Ingress       ID = 8
	WorldIPv4     ID = 9
	WorldIPv6     ID = 10
)

// SourceReserved is the label source of reserved identities: the label set
// "reserved:host" is the identity Host.
const SourceReserved = "reserved"

var reserved = map[string]ID{
	"host":           Host,
	"world":          World,
	"unmanaged":      Unmanaged,
	"health":         Health,
	"init":           Init,
	"remote-node":    RemoteNode,
	"kube-apiserver": KubeAPIServer,
	"ingress":        Ingress,
	"world-ipv4":     WorldIPv4,
	"world-ipv6":     WorldIPv6,
}

// Reserved returns the well-known reserved identities by name (a copy).
func Reserved() map[string]ID { return maps.Clone(reserved) }

// ReservedByName returns the reserved identity called name; "host" and
// "reserved:host" both work.
func ReservedByName(name string) (ID, bool) {
	id, ok := reserved[strings.TrimPrefix(name, SourceReserved+":")]
	return id, ok
}

// reservedName is the name of a well-known reserved identity.
func reservedName(id ID) (string, bool) {
	for n, r := range reserved {
		if r == id {
			return n, true
		}
	}
	return "", false
}
