package gossip

import (
	"fmt"
	"reflect"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. It is a separate type so that
// Pool's method set stays the package's API. memberlist calls these methods
// from its own goroutines, often holding its node lock: they must not block
// and must not call back into memberlist.
type delegate struct {
	p *Pool
}

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
	_ memberlist.MergeDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta returns the encoded local Meta. EncodeMeta already enforced the
// limit; the check here only guards against memberlist's panic on oversize
// meta should the limit ever differ.
func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.p.metaBytes.Load()
	if len(b) > limit {
		d.p.log.Error("gossip meta over memberlist's limit, advertising none", "node", d.p.cfg.NodeName, "size", len(b), "limit", limit)
		return nil
	}
	return b
}

// The pool carries no user messages or state of its own: the store does that.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyAlive vets every alive message, not just joins: passive merging (a
// peer that already knows both clusters) would otherwise bring foreign nodes
// in without a merge.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	return d.admit(n)
}

// NotifyMerge vets a push/pull join: one foreign node refuses the whole merge,
// so two clusters joined by mistake stay apart on both sides.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := d.admit(n); err != nil {
			return err
		}
	}
	return nil
}

// admit refuses nodes of another cluster and nodes whose meta does not decode.
func (d *delegate) admit(n *memberlist.Node) error {
	cfg := d.p.cfg
	m, err := DecodeMeta(n.Meta)
	if err != nil {
		if d.p.limiter.allow("bad-meta:" + n.Name) {
			d.p.log.Warn("refusing member with undecodable metadata", "node", n.Name, "addr", nodeAddr(n), "err", err)
		}
		return fmt.Errorf("gossip: refusing member %s: %w", n.Name, err)
	}
	if m.Cluster != cfg.ClusterName || m.ClusterID != cfg.ClusterID {
		if d.p.limiter.allow("foreign:" + n.Name) {
			d.p.log.Warn("refusing member of another cluster", "node", n.Name, "addr", nodeAddr(n),
				"their_cluster", m.Cluster, "their_cluster_id", m.ClusterID,
				"our_cluster", cfg.ClusterName, "our_cluster_id", cfg.ClusterID)
		}
		return fmt.Errorf("gossip: refusing member %s of cluster %q/%d: we are %q/%d",
			n.Name, m.Cluster, m.ClusterID, cfg.ClusterName, cfg.ClusterID)
	}
	if m.Name != n.Name {
		if d.p.limiter.allow("name:" + n.Name) {
			d.p.log.Warn("refusing member whose metadata names another node", "node", n.Name, "addr", nodeAddr(n), "meta_name", m.Name)
		}
		return fmt.Errorf("gossip: refusing member %s: its metadata names %q", n.Name, m.Name)
	}
	return nil
}

// NotifyConflict is called when two nodes claim one name from different
// addresses; memberlist keeps the first. Usually a copied config.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	if d.p.limiter.allow("conflict:" + existing.Name) {
		d.p.log.Warn("two nodes claim the same name: give each node a unique NodeName (a node restarted on a new address is let back once dead for DeadNodeReclaimTime, 1s)",
			"node", existing.Name, "addr", nodeAddr(existing), "other_addr", nodeAddr(other))
	}
}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.record(EventJoin, n, StateAlive)
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	d.record(EventUpdate, n, stateOf(n.State))
}

// NotifyLeave is called for both graceful leaves and failures; the leaving
// mark in the node's last meta tells them apart.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	_, leaving, _ := decodeMeta(n.Meta)
	if leaving || n.State == memberlist.StateLeft {
		d.record(EventLeave, n, StateLeft)
	} else {
		d.record(EventFail, n, StateDead)
	}
}

// record updates the remembered member and publishes the event under one
// lock, so Members and events never disagree about order.
func (d *delegate) record(t EventType, n *memberlist.Node, s State) {
	p := d.p
	now := time.Now()
	m := p.memberFromNode(n)
	m.State = s
	m.Since = now

	p.mu.Lock()
	defer p.mu.Unlock()
	old, known := p.members[n.Name]
	if known && old.State == s {
		m.Since = old.Since
	}
	p.members[n.Name] = &m
	// memberlist reports an update whenever the meta bytes change; the
	// leaving mark alone is no change of Meta.
	if t == EventUpdate && known && reflect.DeepEqual(old.Meta, m.Meta) {
		return
	}
	if s == StateDead || s == StateLeft {
		p.pruneLocked(now)
	}
	if p.closed {
		return
	}
	switch t {
	case EventFail:
		p.log.Warn("gossip member failed", "node", n.Name, "addr", m.Addr, "state", s.String())
	case EventJoin, EventLeave:
		p.log.Info("gossip member "+t.String(), "node", n.Name, "addr", m.Addr, "state", s.String())
	case EventUpdate:
		p.log.Debug("gossip member updated", "node", n.Name, "addr", m.Addr, "state", s.String())
	}
	p.publishLocked(Event{Type: t, Member: m, At: now})
}
