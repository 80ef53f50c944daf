package lab

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// DefaultDir is where labs keep their state, configs, logs and sockets.
const DefaultDir = "/var/lib/fabric-lab"

// nameRE keeps names short because they end up inside namespace names and
// unix socket paths, which have a hard 108-byte limit.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,11}$`)

// ValidateName reports whether name can name a lab.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("--name: %q is not a valid lab name: use 1-12 lowercase letters, digits or '-', starting with a letter or digit (e.g. --name dev)", name)
	}
	return nil
}

// nsPrefix is shared by every namespace of a lab; the sweep in Down relies on
// it, together with ownsNamespace, to find leftovers after a crash.
func nsPrefix(lab string) string { return "fl-" + lab + "-" }

func routerNS(lab string) string           { return nsPrefix(lab) + "rt" }
func switchNS(lab string, c int) string    { return fmt.Sprintf("%sc%dsw", nsPrefix(lab), c) }
func nodeNS(lab string, c, k int) string   { return fmt.Sprintf("%sc%dn%d", nsPrefix(lab), c, k) }
func nodeName(c, k int) string             { return fmt.Sprintf("c%d-n%d", c, k) }
func clusterName(c int) string             { return fmt.Sprintf("c%d", c) }
func switchMember(c int) string            { return fmt.Sprintf("c%d-sw", c) }
func clientNS(lab string, c int) string    { return fmt.Sprintf("%sc%dcl", nsPrefix(lab), c) }
func clientMember(c int) string            { return fmt.Sprintf("c%d-client", c) }
func extNS(lab string) string              { return nsPrefix(lab) + "ext" }
func routerPort(c int) string              { return fmt.Sprintf("c%d", c) }
func switchPort(k int) string              { return fmt.Sprintf("n%d", k) }
func labDir(dir, lab string) string        { return dir + "/" + lab }
func stateFile(dir, lab string) string     { return labDir(dir, lab) + "/state.json" }
func nodeDir(dir, lab, node string) string { return labDir(dir, lab) + "/" + node }

// bpffsDir is where the lab mounts its own bpffs; each node pins under
// bpffsDir/<node>. It cannot be /sys/fs/bpf: `ip netns exec` remounts /sys
// for the agent, hiding the machine's bpffs, but leaves the lab dir alone.
func bpffsDir(dir, lab string) string { return labDir(dir, lab) + "/bpffs" }

// Workloads. A workload's namespace is named after its node and a number
// that is unique on that node (fl-<lab>-c<c>n<k>w<i>), whatever the
// workload is called, so the sweep in Down can recognise it; the default
// workloads are also called after it: c<c>-n<k>-w<i>.
func workloadNS(lab string, c, k, i int) string {
	return fmt.Sprintf("%sc%dn%dw%d", nsPrefix(lab), c, k, i)
}
func workloadName(c, k, i int) string { return fmt.Sprintf("c%d-n%d-w%d", c, k, i) }

// workloadLabels are the labels of a default workload: one app per index,
// so w1 of every node shares an identity, and the node it runs on.
func workloadLabels(c, k, i int) string { return fmt.Sprintf("app=w%d,node=%s", i, nodeName(c, k)) }

// probeReadyFile is written by a workload's probe server once it listens;
// its path in the server's command line also identifies the process as
// the lab's.
func probeReadyFile(dir, lab, workload string) string {
	return labDir(dir, lab) + "/workloads/" + workload + probeReadySuffix
}

const probeReadySuffix = ".probe-ready"

// workloadNameRE keeps workload names usable as CNI container IDs, file
// names and `fabric lab exec` members.
var workloadNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// ValidateWorkloadName reports whether name can name a workload.
func ValidateWorkloadName(name string) error {
	if !workloadNameRE.MatchString(name) {
		return fmt.Errorf("workload name %q is not valid: use 1-40 lowercase letters, digits or '-', starting with a letter or digit (e.g. web-1)", name)
	}
	return nil
}

// nsSuffixRE matches exactly the suffixes a lab creates. Matching the whole
// suffix (not just the prefix) keeps lab "ab" from sweeping the namespaces
// of lab "ab-c", whose names also start with "fl-ab-".
var nsSuffixRE = regexp.MustCompile(`^(rt|ext|c[0-9]+sw|c[0-9]+cl|c[0-9]+n[0-9]+|c[0-9]+n[0-9]+w[0-9]+)$`)

// ownsNamespace reports whether the namespace ns was made by lab.
func ownsNamespace(lab, ns string) bool {
	rest, ok := strings.CutPrefix(ns, nsPrefix(lab))
	return ok && nsSuffixRE.MatchString(rest)
}

// The address plan. Everything lives inside the lab's own namespaces, so the
// ranges only have to be unique within the lab: cluster c is 10.99.c.0/24 and
// fd99:c::/64, the router is .1 / ::1 and node k is .(10+k) / ::(10+k) (the
// IPv6 host part reuses the decimal digits so both families read alike).

func routerAddrs(c int) []netip.Addr { return rackRouterAddrs(c, 1) }

// Racks after the first get subnets of their own: rack r of cluster c is
// 10.(98+r).c.0/24 and fd99:c:r::/64 (rack 1 keeps 10.99.c.0/24 and
// fd99:c::/64), with the router at .1 / ::1 again.
func rackRouterAddrs(c, r int) []netip.Addr {
	if r <= 1 {
		return []netip.Addr{
			netip.AddrFrom4([4]byte{10, 99, byte(c), 1}),
			netip.MustParseAddr(fmt.Sprintf("fd99:%d::1", c)),
		}
	}
	return []netip.Addr{
		netip.AddrFrom4([4]byte{10, byte(98 + r), byte(c), 1}),
		netip.MustParseAddr(fmt.Sprintf("fd99:%d:%d::1", c, r)),
	}
}

// rackOf is the rack of node k when a cluster has racks racks.
func rackOf(k, racks int) int {
	if racks <= 1 {
		return 1
	}
	return (k-1)%racks + 1
}

// rackRouterPort is the router's interface towards rack r of cluster c.
func rackRouterPort(c, r int) string {
	if r <= 1 {
		return routerPort(c)
	}
	return fmt.Sprintf("c%dr%d", c, r)
}

// rackBridge is rack r's bridge in the cluster's switch namespace.
func rackBridge(r int) string {
	if r <= 1 {
		return "br0"
	}
	return fmt.Sprintf("br%d", r)
}

// clientAddrs are the addresses of cluster c's client: a host on the
// nodes' segment that is not part of the cluster (.250 / ::250).
func clientAddrs(c int) []netip.Addr {
	return []netip.Addr{
		netip.AddrFrom4([4]byte{10, 99, byte(c), 250}),
		netip.MustParseAddr(fmt.Sprintf("fd99:%d::250", c)),
	}
}

// The outside host sits behind the router on its own subnet, 10.98.0.0/24
// and fd98::/64: the router is .1 / ::1, the host .2 / ::2. It reaches the
// clusters only through the router.
func extRouterAddrs() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("fd98::1")}
}

// ExtAddrs are the outside host's addresses.
func ExtAddrs() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("10.98.0.2"), netip.MustParseAddr("fd98::2")}
}

func nodeAddrs(c, k int) []netip.Addr { return rackNodeAddrs(c, 1, k) }

func rackNodeAddrs(c, r, k int) []netip.Addr {
	if r > 1 {
		return []netip.Addr{
			netip.AddrFrom4([4]byte{10, byte(98 + r), byte(c), byte(10 + k)}),
			netip.MustParseAddr(fmt.Sprintf("fd99:%d:%d::%d", c, r, 10+k)),
		}
	}
	return []netip.Addr{
		netip.AddrFrom4([4]byte{10, 99, byte(c), byte(10 + k)}),
		netip.MustParseAddr(fmt.Sprintf("fd99:%d::%d", c, 10+k)),
	}
}

// prefixLen is the on-link prefix length of a lab address.
func prefixLen(a netip.Addr) int {
	if a.Is4() {
		return 24
	}
	return 64
}

// podPools gives each cluster its own pod ranges so that meshed clusters never
// hand out the same address.
func podPools(c int) []string {
	return []string{fmt.Sprintf("10.%d.0.0/16", 200+c), fmt.Sprintf("fd00:%d::/104", 200+c)}
}
