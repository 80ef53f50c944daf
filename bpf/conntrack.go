package bpf

import (
	"strconv"
	"strings"
	"time"
)

// ct_entry flags (include/common.h).
const (
	ctSeenReply = 1 << 0
	ctClosing   = 1 << 1
)

// ctLife is how long entry e of protocol proto may stay idle: the Go side
// of conntrack.h ct_alive.
func (t ctTimeouts) ctLife(proto uint8, flags uint32) time.Duration {
	if proto != ProtoTCP {
		return t.other
	}
	switch {
	case flags&ctClosing != 0:
		return t.closing
	case flags&ctSeenReply == 0:
		return t.syn
	}
	return t.tcp
}

// lbLife is how long the service state of a connection (lb_ct, lb_nat)
// may stay idle, as lb.h judges it.
func (t ctTimeouts) lbLife(proto uint8) time.Duration {
	if proto == ProtoTCP {
		return t.tcp
	}
	return t.other
}

// idle reports whether an entry last seen at lastSeen (bpf_ktime_get_ns)
// has been idle for longer than life at now (same clock). An entry written
// after now was read is not idle.
func idle(lastSeen, now uint64, life time.Duration) bool {
	return lastSeen < now && now-lastSeen > uint64(life)
}

// lbCTKeyOfRevnat is the lb_ct key (the client's tuple to the frontend) of
// the connection a lb_revnat entry (keyed by its replies' tuple) belongs
// to: the client's port is the reply's destination port.
func lbCTKeyOfRevnat(k ctKey, v lbRevnat) ctKey {
	return ctKey{Saddr: v.Client, Daddr: v.Addr, Sport: k.Dport, Dport: v.Port, Proto: k.Proto, Family: k.Family}
}

// parsePortRange parses the content of ip_local_port_range ("32768\t60999").
func parsePortRange(s string) (lo, hi int, ok bool) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	return lo, hi, err1 == nil && err2 == nil && lo <= hi
}
