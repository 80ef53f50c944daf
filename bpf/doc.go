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
//   - underlay.c, TCX ingress of the underlay interface: External service
//     frontends for clients outside the cluster (with SNAT for backends on
//     other nodes, and the replies of those), Geneve termination (no geneve
//     module exists on the target kernels) and native-mode delivery with
//     the source identity from the ipcache.
//
// # The ipcache
//
// What the datapath knows of addresses elsewhere in the cluster
// (State.IPCache: remote endpoints and the pod CIDRs of other nodes) lives
// in two pinned maps with one value, {identity, tunnel endpoint or nexthop}:
// ipcache_host, a hash keyed by {family, address} holding every full-length
// entry (/32 IPv4, /128 IPv6, IPv4-mapped ones as IPv4), and ipcache, an LPM
// trie keyed by {prefix length, family, address} holding only the shorter
// prefixes. lookup_ipcache4 and lookup_ipcache6 (include/common.h), the
// programs' only way into either, try the hash first and fall back to the
// trie: the same answer as one trie of everything, since a full-length match
// is the longest, without the trie's walk growing with the endpoints packed
// around an address. Apply puts every entry in exactly one of the two and
// removes stale ones from whichever holds them, writing host entries before
// the trie loses its stale ones, so an agent restarting on the pins of a
// version without ipcache_host (its /32s and /128s in the trie; Open creates
// the new pin) keeps forwarding to them until Apply has moved them. IPCache
// reads both maps back.
//
// Every delivery to a local endpoint passes policy_ingress
// (include/policy.h) with the resolved source identity; everything a workload
// sends passes policy_egress in lxc.c with the destination's identity (its
// endpoint's, the ipcache's, or 2, world, outside the cluster).
//
// # Policy and connection tracking
//
// Endpoint.Policy is compiled into the policy map, a hash keyed by {host
// ifindex, peer identity, destination port, protocol, direction} with a
// verdict (allow or deny); 0 in identity, port or protocol is the wildcard.
// Port ranges are expanded into one entry per port (at most MaxPortRange per
// entry); for ICMP and ICMPv6 the type stands for the port. The endpoint's
// flags (endpoints and lxc_devices values) say which directions are in
// default deny and which have entries. A packet that starts a connection is
// matched against the at most 8 combinations of {peer, any} x {port, any} x
// {protocol, any} (any protocol with a port: TCP, UDP and SCTP only): a Deny
// drops it, else an Allow passes it, else default deny drops it where the
// direction is enforced. Drops count under "policy" in Drops. Apply writes
// new entries before the flags that enforce them and deletes old ones after.
// Entries that cannot be represented fail closed (see compilePolicy).
//
// Whatever passes is tracked in ct, an LRU hash of Config.CTEntries
// connections keyed by the tuple {addresses, ports, protocol, family} and the
// direction in which the local endpoint accepted it, holding the last time
// seen and TCP state (reply seen, FIN or RST seen). A packet whose reverse
// tuple an endpoint tracks in the other direction (a reply) or whose own
// tuple it tracks in the same direction passes without policy, so replies of
// an allowed connection pass whatever the other direction's policy says.
// Entries idle beyond their lifetime are treated as absent: TCP
// Config.CTTCPTimeout (1h) once both sides were seen, CTSYNTimeout (60s)
// before, CTTCPClosingTimeout (10s) after FIN or RST; everything else
// CTAnyTimeout (5 min); the lifetimes are load-time constants. For ICMP echo the identifier is the port (request: source port; reply:
// destination port); other ICMP messages use their type as destination port.
// IPv4 options are skipped; IPv6 extension headers are not walked, except one
// fragment header right after the fixed header. Later fragments take the
// ports of their datagram's first fragment (the fragments map); one whose
// first was not seen matches only port-wildcard entries and is not tracked.
// ICMPv6 neighbour discovery and MLD are never policed.
//
// Datapath.GCConntrack(now), which the agent calls periodically, deletes
// (reading and deleting in batches) the expired entries of ct, lb_ct and
// lb_nat (TCP: CTTCPTimeout, others: CTAnyTimeout), lb_revnat entries whose
// lb_ct entry is gone or expired, and lb_affinity records idle beyond their
// service's affinity timeout or of services gone; so the tables do not rely
// on LRU eviction alone.
//
// Not done here: CIDR peers (the map is per identity; the agent maps only
// identities), L7 rules, related ICMP errors (an ICMP error about a tracked
// connection is judged as a new packet), garbage collection of the
// fragments map (LRU only), and flushing ct when policy changes (a connection
// accepted before a change lives on until it idles out). Traffic the node's
// stack itself routes into a workload would not pass policy_ingress; today
// nodes have no routes to workloads, so there is none.
//
// # Services
//
// State.Services are load-balanced by the programs (include/lb.h). Maps:
// lb_services {frontend address, port, protocol, family} → {service id,
// backend count, table size, affinity timeout, flags (External)};
// lb_backends {backend id} → {address, port, family}; lb_maglev, a hash of
// maps keyed by service id whose inner arrays (BPF_F_INNER_MAP, one per
// service, sized to its table) hold backend ids; lb_ct, an LRU of
// Config.CTEntries keyed by the client's tuple to the frontend, holding the
// chosen backend id; lb_revnat, an LRU of the same size keyed by the reply's
// tuple, holding the frontend to restore; lb_affinity {service id, client
// address} → {backend id, last seen}. Ids are the Go side's: every
// existing frontend and backend keeps its id (a backend's id is that of its
// address and port, shared by the services that use it), so ids survive
// Apply and agent restarts; new ones take the id above the highest handed
// out (so a removed backend's id, which lb_ct may still name, is not soon
// given to another). A changed Maglev table gets a new inner map swapped in
// atomically; an unchanged one is not written.
//
// Apply keeps what the maps it writes hold in memory (lbState for the
// service maps, mirrorOf for the others; the programs never write them),
// read from the pins at the first Apply after Open and again after an Apply
// that failed, so an Apply compares in memory and writes only what changed:
// adding one service to thousands writes its backends, its table and its
// frontend. Writes go in batches (BPF_MAP_*_BATCH, one update per entry on
// kernels without it). That matters most for lb_maglev: every userspace
// write to a map of maps waits for an RCU grace period (about 10 ms) before
// it returns, once per command, so the new tables of an Apply are swapped in
// maglevBatch at a time and a thousand new services cost one wait, not a
// thousand. An add or a removal of one service still pays one wait. As the
// state is kept in memory, one Datapath at a time may Apply to a node's
// pins: a second would not see the first's writes (the agent opens one).
//
// A workload's TCP or UDP packet to a frontend is translated in lxc.c before
// the endpoint and ipcache lookups, so policy, connection tracking and
// routing see the backend (as in Cilium): its connection's recorded backend
// if that backend still exists (else it is picked again), else the client's
// backend while its affinity is fresh, else the Maglev slot of a hash of the
// 5-tuple (the same on every node). Destination address and port are
// rewritten with incremental checksum updates (a UDP checksum of 0 stays 0).
// A frontend without backends drops ("no_service_backend" in Drops and in
// flow events). The reply is rewritten back to come from the frontend on the
// client's node, after policy judged it as the backend sent it: in
// deliver_local for a workload client (the backend on this node, or on
// another node through overlay.c or underlay.c), at the backend's veth for a
// hairpin or an outside client.
//
// Hairpin: a workload reaching itself through a frontend gets its own
// packet with its source rewritten to the frontend address (its kernel would
// drop a packet from one of its own addresses without accept_local); the
// reply, sent to the frontend address, is restored at its veth and goes
// straight back into it.
//
// External frontends are also served to packets arriving on the underlay
// interface (underlay.c). A backend on this node gets the packet translated
// and delivered; its reply is rewritten at the backend's veth and sent out
// of the underlay interface by redirect_fib (include/forward.h: a FIB lookup
// on the client's address restricted to the underlay interface, then
// bpf_redirect_neigh), never through the node's stack, which would drop a
// reply from a node port (the node's own address) as a martian; a client
// not routed through the underlay interface is left to the stack.
//
// A backend on another node (by the ipcache) gets the packet with its
// destination translated to the backend and its source to this node's
// underlay address (UnderlayIPv4, or UnderlayIPv6 for IPv6; none: left
// alone) and a NAT port, forwarded by mode (VXLAN, Geneve, native) with the
// world identity (2) as the source identity. lb_nat, an LRU of
// Config.NATEntries keyed by the reply's tuple {backend, node address, NAT
// port}, holds the client and the frontend; lb_ct's entry of the connection
// holds its NAT port, so later packets keep it. A new connection takes the
// first port from a hash of its tuple onwards (at most 32 tries) that no
// live connection to the same backend address, port and protocol holds;
// none free drops it ("nat_ports_exhausted" in Drops). The ports are
// Config.NATPortMin..NATPortMax, by default 61000..65535: above the kernel's
// default ip_local_port_range (32768 60999), so the node's own connections
// do not take them; Open logs a warning when the node's
// ip_local_port_range overlaps the range (a node connection to a backend
// from an overlapping port could have its replies taken for a translated
// connection's). The backend's node routes the reply to this node's
// address through its stack, unencapsulated (nodes forward: ip_forward);
// underlay.c finds it in lb_nat before anything else, rewrites it back to
// come from the frontend and go to the client, and sends it out with
// redirect_fib. lb_nat entries are refreshed by both directions.
//
// Not done: replies to a translated connection that come back encapsulated
// (an agent whose ipcache gives node addresses a tunnel endpoint would
// send them through the overlay, where overlay.c and Geneve termination
// drop them as for no local endpoint), the MTU of translated packets
// forwarded through an overlay (an outside client's full-size segment
// grows by the encapsulation and is dropped; no ICMP "fragmentation
// needed" is sent: clamp the MSS or lower the path MTU), IPv4 fragments and
// IPv6 extension headers (not translated), and SCTP.
//
// # Flows
//
// The programs report flow events in the pinned ring buffer flows (1 MiB,
// include/flows.h): a "drop" at every drop, where it is decided (policy in
// policy_ingress and policy_egress, with the tuple and both identities; the
// other reasons in drop(), with the tuple parsed from the packet as it is,
// for a tunnel packet the outer one, and the sending endpoint as the egress
// side on a workload veth, else no endpoint); a "new" when a conntrack entry
// is created (at the sender's egress and at the delivery's ingress, so a
// same-node connection gives two); an "end" at the first TCP FIN or RST of a
// tracked connection, once per conntrack entry. Other packets emit nothing.
// Events are 64 bytes (struct flow_event, flowEvent in flows.go); a full ring
// buffer loses the event, counted in metrics as flow_events_lost
// (FlowEventsLost), and never holds up the packet. Datapath.Flows reads the
// ring buffer into a channel; flows a slow consumer does not take in time are
// counted by FlowsLost. A ring buffer hands each event to one reader, so a
// node has one Flows reader (the agent's); several would split the events.
// Timestamps are bpf_ktime_get_ns, converted to the wall clock when read.
package bpf
