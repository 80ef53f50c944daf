package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsCollector reads the agent's state at scrape time rather than
// keeping counters in the hot paths.
type metricsCollector struct {
	a        *Agent
	members  *prometheus.Desc
	isLeader *prometheus.Desc
	term     *prometheus.Desc
	commit   *prometheus.Desc
	applied  *prometheus.Desc
	revision *prometheus.Desc
	health   *prometheus.Desc
	dpEPs    *prometheus.Desc
	dpCache  *prometheus.Desc
	dropped  *prometheus.Desc
	dpDrops  *prometheus.Desc
	dpSvcs   *prometheus.Desc
	ctGC     *prometheus.Desc
	bgpPeers *prometheus.Desc
	bgpAdv   *prometheus.Desc
	bgpLearn *prometheus.Desc
	l2Owned  *prometheus.Desc
}

func newMetricsCollector(a *Agent) *metricsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("fabric_"+name, help, labels, nil)
	}
	return &metricsCollector{
		a:        a,
		members:  d("gossip_members", "Gossip members this node sees, by state.", "state"),
		isLeader: d("store_leader", "1 when this node leads the store."),
		term:     d("store_term", "Raft term."),
		commit:   d("store_commit_index", "Raft commit index."),
		applied:  d("store_applied_index", "Raft applied index."),
		revision: d("store_revision", "Store revision this node has applied."),
		health:   d("gossip_health_score", "Memberlist awareness score (0 is healthy)."),
		dpEPs:    d("datapath_endpoints", "Local endpoints programmed in the datapath."),
		dpCache:  d("datapath_ipcache_entries", "IP cache entries programmed in the datapath."),
		dropped:  d("gossip_dropped_events_total", "Membership events not delivered to a slow subscriber."),
		dpDrops:  d("datapath_drops_total", "Packets the datapath dropped, by reason.", "reason"),
		dpSvcs:   d("datapath_service_frontends", "Service frontends (address, port, protocol) programmed in the datapath."),
		ctGC:     d("datapath_conntrack_collected_total", "Connection-tracking entries removed by the periodic GC."),
		bgpPeers: d("bgp_sessions", "BGP sessions by state.", "state"),
		bgpAdv:   d("bgp_advertised_prefixes", "Prefixes this node announces over BGP."),
		bgpLearn: d("bgp_learned_routes", "Routes this node learned over BGP."),
		l2Owned:  d("l2_announced_ips", "Addresses this node answers ARP/NDP for."),
	}
}

func (m *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(m, ch)
}

func (m *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gs := m.a.pool.Stats()
	gauge(m.members, float64(gs.Alive), "alive")
	gauge(m.members, float64(gs.Suspect), "suspect")
	gauge(m.members, float64(gs.Dead), "dead")
	gauge(m.members, float64(gs.Left), "left")
	gauge(m.health, float64(gs.HealthScore))
	ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(gs.DroppedEvents))
	ss := m.a.store.Status()
	leader := 0.0
	if ss.Role == "leader" {
		leader = 1
	}
	gauge(m.isLeader, leader)
	gauge(m.term, float64(ss.Term))
	gauge(m.commit, float64(ss.CommitIndex))
	gauge(m.applied, float64(ss.AppliedIndex))
	gauge(m.revision, float64(ss.Revision))
	if m.a.dp != nil {
		ds := m.a.dp.status()
		gauge(m.dpEPs, float64(ds.Endpoints))
		gauge(m.dpCache, float64(ds.IPCache))
		gauge(m.dpSvcs, float64(ds.Services))
		ch <- prometheus.MustNewConstMetric(m.ctGC, prometheus.CounterValue, float64(m.a.dp.ctCollected.Load()))
		if drops, err := m.a.dp.dp.Drops(); err == nil {
			for reason, n := range drops {
				ch <- prometheus.MustNewConstMetric(m.dpDrops, prometheus.CounterValue, float64(n), reason)
			}
		}
	}
	if m.a.bgp != nil {
		st := m.a.bgp.status()
		states := map[string]int{}
		for _, p := range st.Peers {
			states[p.State]++
		}
		for s, n := range states {
			gauge(m.bgpPeers, float64(n), s)
		}
		gauge(m.bgpAdv, float64(len(st.Advertised)))
		gauge(m.bgpLearn, float64(len(st.Learned)))
	}
	if m.a.l2 != nil {
		gauge(m.l2Owned, float64(len(m.a.l2.status().Owned)))
	}
}

// serveMetrics serves Prometheus metrics on addr until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context) {
	if a.cfg.MetricsAddr == "" {
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetricsCollector(a), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		a.log.Error("metrics listener", "addr", a.cfg.MetricsAddr, "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	a.log.Info("serving metrics", "addr", a.cfg.MetricsAddr)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics server", "err", err)
	}
}
