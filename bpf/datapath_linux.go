//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Pins under Config.PinDir: maps by their C name, links under linksDir.
const (
	linksDir     = "links"
	underlayPin  = "underlay"
	overlayPin   = "overlay"
	lxcPinPrefix = "lxc_" // + host ifindex
)

// Datapath is a node's loaded eBPF datapath. Its methods may be called from
// several goroutines; Open and Apply must run on an OS thread inside the
// node's network namespace, since interfaces are resolved and attached there.
type Datapath struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	lxc      lxcObjects
	overlay  *overlayObjects // VXLAN mode only
	underlay underlayObjects
	links    map[string]link.Link // by pin name
	// lb is what the service maps hold, kept so that Apply reads no map
	// back and writes only what changed; nil: read it from the pins first
	// (after Open, and after an Apply that failed).
	lb *lbState
	// mirrors holds mirrorOf's copies of the maps Apply writes, by map.
	mirrors map[*ebpf.Map]any
	// maglevSpec is the inner map of lb_maglev, sized per service.
	maglevSpec *ebpf.MapSpec
	closed     bool
	done       chan struct{} // closed by Close and Destroy: ends the Flows readers

	flowsLost atomic.Uint64 // flow events a slow Flows consumer missed
}

// Open loads the programs for cfg, reusing the maps pinned in cfg.PinDir (so
// their content survives a restart), and attaches the underlay program (and
// the overlay program in VXLAN mode). Links pinned by an earlier Open, the
// per-endpoint ones included, get the new programs atomically: a restart
// drops no packet. Links of another mode's devices are removed.
func Open(cfg Config) (*Datapath, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.PinDir, linksDir), 0o700); err != nil {
		return nil, fmt.Errorf("make pin dir: %w", err)
	}
	underlayIf, err := net.InterfaceByName(cfg.UnderlayIfName)
	if err != nil {
		return nil, fmt.Errorf("underlay interface %s: %w", cfg.UnderlayIfName, err)
	}
	vxlanIndex := 0
	if cfg.Mode == ModeVXLAN {
		vx, err := net.InterfaceByName(cfg.VXLANIfName)
		if err != nil {
			return nil, fmt.Errorf("vxlan device %s (create it with tunnel.EnsureVXLAN first): %w", cfg.VXLANIfName, err)
		}
		vxlanIndex = vx.Index
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := &Datapath{cfg: cfg, log: log, links: make(map[string]link.Link), mirrors: make(map[*ebpf.Map]any), done: make(chan struct{})}

	spec, err := loadLxc()
	if err != nil {
		return nil, fmt.Errorf("load embedded object: %w", err)
	}
	if m, ok := spec.Maps["lb_maglev"]; ok && m.InnerMap != nil {
		d.maglevSpec = m.InnerMap.Copy()
	} else {
		return nil, errors.New("embedded object lacks the lb_maglev map of maps")
	}
	consts := constants(cfg, underlayIf.Index, vxlanIndex)
	sizes := mapSizes(cfg)
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}}
	if err := load(loadLxc, consts, sizes, &d.lxc, opts); err != nil {
		return nil, err
	}
	if err := load(loadUnderlay, consts, sizes, &d.underlay, opts); err != nil {
		d.closeObjects()
		return nil, err
	}
	if cfg.Mode == ModeVXLAN {
		d.overlay = new(overlayObjects)
		if err := load(loadOverlay, consts, sizes, d.overlay, opts); err != nil {
			d.overlay = nil
			d.closeObjects()
			return nil, err
		}
	}

	fail := func(err error) (*Datapath, error) {
		d.closeLinks()
		d.closeObjects()
		return nil, err
	}
	if err := d.attach(underlayPin, underlayIf.Index, d.underlay.UnderlayIngress); err != nil {
		return fail(err)
	}
	if d.overlay != nil {
		if err := d.attach(overlayPin, vxlanIndex, d.overlay.OverlayIngress); err != nil {
			return fail(err)
		}
	} else if err := d.removePinnedLink(overlayPin); err != nil {
		return fail(err)
	}
	// Endpoint links from an earlier run keep forwarding with the old
	// program until they are updated here; Apply removes those whose
	// endpoint is gone.
	pins, err := d.pinnedLinks()
	if err != nil {
		return fail(err)
	}
	for _, name := range pins {
		ifindex, ok := lxcIfindex(name)
		if !ok {
			continue
		}
		if err := d.attach(name, ifindex, d.lxc.LxcIngress); err != nil {
			return fail(err)
		}
	}
	checkLocalPorts(log, cfg)
	log.Info("datapath opened", "mode", cfg.Mode, "pin_dir", cfg.PinDir,
		"underlay", cfg.UnderlayIfName, "endpoint_links", len(d.links)-1-btoi(d.overlay != nil))
	return d, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// constants are the load-time settings of every program (include/common.h).
func constants(cfg Config, underlayIndex, vxlanIndex int) map[string]any {
	mode := map[Mode]uint32{ModeVXLAN: 1, ModeGeneve: 2, ModeNative: 3}[cfg.Mode]
	var v6 [16]byte
	if cfg.UnderlayIPv6.IsValid() {
		v6 = cfg.UnderlayIPv6.As16()
	}
	natLo, natHi := cfg.natPorts()
	ct := cfg.ctTimeouts()
	return map[string]any{
		"cfg_mode":             mode,
		"cfg_underlay_ifindex": uint32(underlayIndex),
		"cfg_vxlan_ifindex":    uint32(vxlanIndex),
		"cfg_node_ipv4":        cfg.UnderlayIPv4.As4(), // network order, as the C side compares it
		"cfg_node_ipv6":        v6,
		"cfg_geneve_port":      uint16(cfg.GenevePort),
		"cfg_nat_port_min":     uint16(natLo),
		"cfg_nat_port_max":     uint16(natHi),
		"cfg_ct_tcp_ns":        uint64(ct.tcp),
		"cfg_ct_syn_ns":        uint64(ct.syn),
		"cfg_ct_closing_ns":    uint64(ct.closing),
		"cfg_ct_other_ns":      uint64(ct.other),
	}
}

// mapSizes are the sizes of the maps that cfg sizes, by C name.
func mapSizes(cfg Config) map[string]uint32 {
	ct := cfg.CTEntries
	if ct == 0 {
		ct = DefaultCTEntries
	}
	or := func(v, deflt int) uint32 {
		if v == 0 {
			return uint32(deflt)
		}
		return uint32(v)
	}
	svc := or(cfg.ServiceEntries, DefaultServiceEntries)
	return map[string]uint32{
		"ct":          uint32(ct),
		"lb_ct":       uint32(ct),
		"lb_revnat":   uint32(ct),
		"lb_services": svc,
		"lb_maglev":   svc,
		"lb_backends": or(cfg.BackendEntries, DefaultBackendEntries),
		"lb_affinity": or(cfg.AffinityEntries, DefaultAffinityEntries),
		"lb_nat":      or(cfg.NATEntries, DefaultNATEntries),
	}
}

func load(spec func() (*ebpf.CollectionSpec, error), consts map[string]any, sizes map[string]uint32, objs any, opts *ebpf.CollectionOptions) error {
	cs, err := spec()
	if err != nil {
		return fmt.Errorf("load embedded object: %w", err)
	}
	for name, n := range sizes {
		if m, ok := cs.Maps[name]; ok {
			m.MaxEntries = n
		}
	}
	for name, v := range consts {
		vs, ok := cs.Variables[name]
		if !ok {
			continue // a program that does not read this setting
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	if err := cs.LoadAndAssign(objs, opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("load programs: %+v", verr)
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return fmt.Errorf("load programs: a map pinned by an older version differs (remove the pins with Destroy): %w", err)
		}
		return fmt.Errorf("load programs: %w", err)
	}
	return nil
}

// checkBPFFS makes sure dir (or the folder it will be created in) is on a
// bpffs mount: pinning anywhere else fails with a less helpful error.
func checkBPFFS(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if errors.Is(err, os.ErrNotExist) && p != "/" {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat pin dir %s: %w", p, err)
		}
		if st.Type != unix.BPF_FS_MAGIC {
			return fmt.Errorf("pin dir %s is not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf): %w", dir, ErrNotSupported)
		}
		return nil
	}
}

// attach makes the pinned TCX ingress link name run prog on ifindex: an
// existing pinned link is updated in place (atomic for traffic), a missing
// or defunct one (its device gone) is replaced by a new link.
func (d *Datapath) attach(name string, ifindex int, prog *ebpf.Program) error {
	path := filepath.Join(d.cfg.PinDir, linksDir, name)
	if l, ok := d.links[name]; ok {
		return l.Update(prog)
	}
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			if err := l.Update(prog); err != nil {
				l.Close()
				return fmt.Errorf("update program of link %s: %w", name, err)
			}
			d.links[name] = l
			return nil
		}
		// Defunct (device deleted) or attached elsewhere: start afresh.
		_ = l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link %s: %w", name, err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach tcx ingress to ifindex %d: TCX needs Linux 6.6: %w", ifindex, ErrNotSupported)
		}
		return fmt.Errorf("attach tcx ingress to ifindex %d: %w", ifindex, err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return fmt.Errorf("pin link %s: %w", name, err)
	}
	d.links[name] = l
	return nil
}

// detach unpins and closes link name, which detaches it.
func (d *Datapath) detach(name string) error {
	l, ok := d.links[name]
	if !ok {
		return d.removePinnedLink(name)
	}
	delete(d.links, name)
	if err := l.Unpin(); err != nil {
		l.Close()
		return fmt.Errorf("unpin link %s: %w", name, err)
	}
	return l.Close()
}

// removePinnedLink detaches a link that only exists as a pin.
func (d *Datapath) removePinnedLink(name string) error {
	path := filepath.Join(d.cfg.PinDir, linksDir, name)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link we can load (corrupt): the pin itself is all there is.
		if rerr := os.Remove(path); rerr != nil {
			return fmt.Errorf("remove pin %s: %w", name, err)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link %s: %w", name, err)
	}
	return nil
}

func (d *Datapath) pinnedLinks() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.cfg.PinDir, linksDir))
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

func lxcPin(ifindex uint32) string { return lxcPinPrefix + strconv.FormatUint(uint64(ifindex), 10) }

func lxcIfindex(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, lxcPinPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

// Apply makes the datapath serve exactly st: the maps (policy included) get
// st's entries and lose every other, each endpoint's host veth gets the lxc
// program (once, pinned), and links of endpoints no longer in st are
// removed. It may be called any number of times with the same state; that
// changes nothing. Invalid entries of st (a duplicate IP, an identity beyond
// the VNI, a policy entry that cannot be represented) are left out and
// reported in the error while the rest is applied; policy fails closed. On any other
// error the datapath holds a mix of the old and the new state; calling Apply
// again converges.
func (d *Datapath) Apply(st State) error {
	want, invalid := compile(st, d.cfg.Mode)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("apply: datapath is closed")
	}

	// Order: detach links of endpoints that left before their entries go,
	// fill the maps, then attach new endpoints so their first packet finds
	// its entries.
	errs := []error{invalid}
	for name := range d.links {
		if ifindex, ok := lxcIfindex(name); ok {
			if _, keep := want.devices[uint32(ifindex)]; !keep {
				errs = append(errs, d.detach(name))
			}
		}
	}
	// Policy entries an endpoint gains are written before the flags that
	// enforce them, and those it loses are removed after the flags stop
	// enforcing them, so a change never drops traffic that both the old
	// and the new policy allow.
	errs = append(errs,
		putMap(d, d.lxc.Policy, want.policy),
		syncMap(d, d.lxc.Endpoints, want.endpoints),
		syncMap(d, d.lxc.LxcDevices, want.devices),
		// Host entries are written before the trie loses its stale
		// entries, so a /32 that an older version kept in the trie (pins
		// from before ipcache_host) never goes missing in between.
		putMap(d, d.lxc.IpcacheHost, want.hosts),
		syncMap(d, d.lxc.Ipcache, want.ipcache),
		deleteStale(d, d.lxc.IpcacheHost, want.hosts),
		syncMap(d, d.lxc.Policy, want.policy),
	)
	errs = append(errs, d.applyServices(want.services))
	indexes := make([]uint32, 0, len(want.devices))
	for ifindex := range want.devices {
		indexes = append(indexes, ifindex)
	}
	slices.Sort(indexes)
	for _, ifindex := range indexes {
		name := lxcPin(ifindex)
		if _, ok := d.links[name]; ok {
			continue
		}
		if err := d.attach(name, int(ifindex), d.lxc.LxcIngress); err != nil {
			errs = append(errs, fmt.Errorf("endpoint on ifindex %d: %w", ifindex, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply datapath state: %w", err)
	}
	return nil
}

// mirrorOf is what m, a map only Apply writes (the programs only read it),
// holds: read from the kernel once, then kept in step with every write, so
// that Apply compares against memory and an unchanged entry costs no system
// call. A failed write drops the mirror, and the next Apply reads m again.
func mirrorOf[K, V comparable](d *Datapath, m *ebpf.Map) (map[K]V, error) {
	if c, ok := d.mirrors[m].(map[K]V); ok {
		return c, nil
	}
	var (
		k K
		v V
		c = make(map[K]V)
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		c[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read map %s: %w", mapName(m), err)
	}
	d.mirrors[m] = c
	return c, nil
}

// putMap writes the entries of want that m lacks or holds otherwise, and
// deletes nothing.
func putMap[K, V comparable](d *Datapath, m *ebpf.Map, want map[K]V) error {
	cur, err := mirrorOf[K, V](d, m)
	if err != nil {
		return err
	}
	var (
		keys []K
		vals []V
	)
	for k, w := range want {
		if c, ok := cur[k]; ok && c == w {
			continue
		}
		keys, vals = append(keys, k), append(vals, w)
	}
	if err := putBatch(m, keys, vals); err != nil {
		delete(d.mirrors, m)
		return err
	}
	for i, k := range keys {
		cur[k] = vals[i]
	}
	return nil
}

// syncMap makes m hold exactly want, writing only what differs.
func syncMap[K, V comparable](d *Datapath, m *ebpf.Map, want map[K]V) error {
	if err := deleteStale(d, m, want); err != nil {
		return err
	}
	return putMap(d, m, want)
}

// deleteStale deletes the entries of m that want lacks, and writes nothing.
func deleteStale[K, V comparable](d *Datapath, m *ebpf.Map, want map[K]V) error {
	cur, err := mirrorOf[K, V](d, m)
	if err != nil {
		return err
	}
	var stale []K
	for k := range cur {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := deleteBatch(m, stale); err != nil {
		delete(d.mirrors, m)
		return err
	}
	for _, k := range stale {
		delete(cur, k)
	}
	return nil
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil {
		return info.Name
	}
	return m.String()
}

// IngressSeen returns how many packets each {source identity, destination
// identity} pair delivered to local endpoints (the policy seam's counter).
func (d *Datapath) IngressSeen() (map[[2]uint32]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("ingress seen: datapath is closed")
	}
	out := make(map[[2]uint32]uint64)
	var (
		k    seenKey
		vals []uint64
	)
	it := d.lxc.IngressSeen.Iterate()
	for it.Next(&k, &vals) {
		var sum uint64
		for _, v := range vals {
			sum += v
		}
		out[[2]uint32{k.Src, k.Dst}] += sum
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read ingress_seen: %w", err)
	}
	return out, nil
}

// IPCache reads the ipcache back from the kernel (not from the last Apply),
// so operators and tests see what the datapath really uses: the host
// entries of ipcache_host, then the prefixes of the ipcache trie.
func (d *Datapath) IPCache() ([]IPCacheEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("ipcache: datapath is closed")
	}
	var (
		h   ipcacheHostKey
		k   ipcacheKey
		v   remoteInfo
		out []IPCacheEntry
	)
	hit := d.lxc.IpcacheHost.Iterate()
	for hit.Next(&h, &v) {
		out = append(out, entryOf(h.trieKey(), v))
	}
	if err := hit.Err(); err != nil {
		return nil, fmt.Errorf("read ipcache_host: %w", err)
	}
	it := d.lxc.Ipcache.Iterate()
	for it.Next(&k, &v) {
		out = append(out, entryOf(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read ipcache: %w", err)
	}
	return out, nil
}

// Drops returns the datapath's drop counters by reason.
func (d *Datapath) Drops() (map[string]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("drops: datapath is closed")
	}
	out := make(map[string]uint64)
	for i, name := range dropReasons {
		if name == "" {
			continue // not a drop
		}
		var vals []uint64
		if err := d.lxc.Metrics.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("read metrics: %w", err)
		}
		for _, v := range vals {
			out[name] += v
		}
	}
	return out, nil
}

// Close releases the datapath's file descriptors. Pinned maps and links stay,
// so traffic keeps flowing until the next Open takes over.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	close(d.done)
	return errors.Join(d.closeLinks(), d.closeObjects())
}

func (d *Datapath) closeLinks() error {
	var errs []error
	for name, l := range d.links {
		errs = append(errs, l.Close())
		delete(d.links, name)
	}
	return errors.Join(errs...)
}

func (d *Datapath) closeObjects() error {
	errs := []error{d.lxc.Close(), d.underlay.Close()}
	if d.overlay != nil {
		errs = append(errs, d.overlay.Close())
	}
	return errors.Join(errs...)
}

// Destroy detaches every program this node's datapath attached and removes
// its pins (node removal, lab teardown). Traffic stops.
func (d *Datapath) Destroy() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("destroy: datapath is closed; Open it again first")
	}
	var errs []error
	for name := range d.links {
		errs = append(errs, d.detach(name))
	}
	// Pins of links this process never loaded (an endpoint whose device
	// is gone).
	if names, err := d.pinnedLinks(); err == nil {
		for _, name := range names {
			errs = append(errs, d.removePinnedLink(name))
		}
	}
	for _, m := range []*ebpf.Map{d.lxc.Endpoints, d.lxc.LxcDevices, d.lxc.Ipcache, d.lxc.IpcacheHost, d.lxc.IngressSeen, d.lxc.Metrics,
		d.lxc.Policy, d.lxc.Ct, d.lxc.Fragments, d.lxc.Flows, d.lxc.LbServices, d.lxc.LbBackends, d.lxc.LbMaglev,
		d.lxc.LbCt, d.lxc.LbRevnat, d.lxc.LbAffinity, d.lxc.LbNat} {
		errs = append(errs, m.Unpin())
	}
	d.closed = true
	close(d.done)
	errs = append(errs, d.closeObjects())
	errs = append(errs, os.Remove(filepath.Join(d.cfg.PinDir, linksDir)))
	if err := os.Remove(d.cfg.PinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy datapath: %w", err)
	}
	return nil
}
