package policy

import "github.com/fabric-net/fabric/fabric/identity"

// clusterReserved are the reserved identities that belong to every cluster:
// everything Cilium's "cluster" entity covers besides the workloads.
var clusterReserved = []identity.ID{identity.Host, identity.RemoteNode, identity.Health,
	identity.Init, identity.Unmanaged, identity.KubeAPIServer, identity.Ingress}

// entityIDs returns the fixed identities of an entity, or all=true for the
// wildcard. "cluster" is not fixed: see inCluster.
func entityIDs(name string) (ids []identity.ID, all bool) {
	switch name {
	case "all":
		return nil, true
	case "world":
		return []identity.ID{identity.World, identity.WorldIPv4, identity.WorldIPv6}, false
	case "cluster":
		return clusterReserved, false
	}
	if id, ok := identity.ReservedByName(name); ok {
		return []identity.ID{id}, false
	}
	return nil, false
}

// inCluster reports whether id is in the entity "cluster" as seen from an
// endpoint of cluster clusterID: the cluster's reserved identities and every
// workload identity allocated in that cluster. Remote clusters' workloads are
// outside it, as in Cilium.
func inCluster(id identity.ID, clusterID uint32) bool {
	if id.IsReserved() {
		for _, r := range clusterReserved {
			if id == r {
				return true
			}
		}
		return false
	}
	return id.ClusterID() == clusterID
}

// entityMatches reports whether the peer identity id is in entity name.
func entityMatches(name string, id identity.ID, clusterID uint32) bool {
	if name == "cluster" {
		return inCluster(id, clusterID)
	}
	ids, all := entityIDs(name)
	if all {
		return true
	}
	for _, e := range ids {
		if e == id {
			return true
		}
	}
	return false
}
