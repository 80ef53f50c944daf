package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fabric-net/fabric/bgp"
	"github.com/fabric-net/fabric/bgp/frr"
	"github.com/fabric-net/fabric/bgp/speakerproc"
)

// bgpPrefixes is how many /32s each speaker announces.
const bgpPrefixes = 100_000

const bgpFRRConf = `frr defaults datacenter
hostname tor
router bgp 65000
 bgp router-id 10.78.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.78.1.2 remote-as 65001
 neighbor 10.78.1.2 timers 3 9
 neighbor 10.78.2.2 remote-as 65002
 neighbor 10.78.2.2 timers 3 9
`

// benchBGP measures how long 100k /32s take from the speaker's API to FRR's
// table, Fabric's in-process speaker (a child process in a node namespace)
// against Debian's gobgpd fed through "gobgp mrt inject"; and how long
// FRR keeps a dead node's routes after its speaker is SIGKILLed. FRR runs
// in its own namespace, each speaker in another, linked by veth pairs
// created inside them.
func benchBGP(ctx context.Context, o options, cl *cleanup, w io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root for network namespaces")
	}
	if _, err := os.Stat(filepath.Join(frr.Daemons, "bgpd")); err != nil {
		return frr.ErrNotInstalled
	}
	frrNS, err := cl.newNetNS("frr")
	if err != nil {
		return err
	}
	var nodeNS [2]string
	for i := range nodeNS {
		if nodeNS[i], err = cl.newNetNS(fmt.Sprintf("n%d", i+1)); err != nil {
			return err
		}
		tor, node := fmt.Sprintf("fbb%s-t%d", runID, i+1), fmt.Sprintf("fbb%s-n%d", runID, i+1)
		if err := ipScript(
			[]string{"link", "add", tor, "netns", frrNS, "type", "veth", "peer", "name", node, "netns", nodeNS[i]},
			[]string{"-n", frrNS, "addr", "add", fmt.Sprintf("10.78.%d.1/24", i+1), "dev", tor},
			[]string{"-n", frrNS, "link", "set", tor, "up"},
			[]string{"-n", nodeNS[i], "addr", "add", fmt.Sprintf("10.78.%d.2/24", i+1), "dev", node},
			[]string{"-n", nodeNS[i], "link", "set", node, "up"},
		); err != nil {
			return err
		}
	}
	dir, _, err := cl.tempDir("fabric-bench-bgp-")
	if err != nil {
		return err
	}
	// FRR's daemons run as user frr and must reach their folder.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	router, err := frr.Start(filepath.Join(dir, "frr"), frrNS, bgpFRRConf)
	if err != nil {
		return err
	}
	cl.add(func() { router.Stop() })

	advs := make([]bgp.Advertisement, bgpPrefixes)
	for i := range advs {
		n := 10<<24 | 128<<16 + uint32(i)
		advs[i] = bgp.Advertisement{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), 32)}
	}

	// Fabric's speaker.
	progress("bgp: fabric speaker: announcing %d prefixes", bgpPrefixes)
	fab, err := benchFabricSpeaker(ctx, cl, router, nodeNS[0], dir, advs)
	if err != nil {
		return fmt.Errorf("fabric speaker: %w", err)
	}
	// gobgpd.
	progress("bgp: gobgpd: announcing %d prefixes", bgpPrefixes)
	gob, gobErr := benchGobgpd(ctx, cl, router, nodeNS[1], dir, advs)

	fmt.Fprintf(w, "\n### BGP: %d IPv4 /32s to FRR %s\n\n", bgpPrefixes, frrVersion())
	fmt.Fprintf(w, "Time from handing the whole set to the speaker until FRR's `show bgp summary json` counts all of them (pfxRcd), and from SIGKILL of the speaker until FRR has dropped them (the kernel closes the TCP session; no hold-timer wait). One run each; FRR, the speakers and the links are namespaces on this machine.\n\n")
	fmt.Fprintf(w, "| speaker | announce 100k (to FRR) | API call | re-announce same set | SIGKILL → withdrawn at FRR |\n|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| fabric (gobgp v3.37 in-process, `bgp.Speaker.Advertise`) | %s | %s | %s | %s |\n", ms(fab.announce), ms(fab.call), ms(fab.again), ms(fab.death))
	if gobErr != nil {
		fmt.Fprintf(w, "| gobgpd (baseline) | failed: %v | | | |\n", gobErr)
		return nil
	}
	short := ""
	if gob.received != bgpPrefixes {
		short = fmt.Sprintf(" (only %d arrived: `gobgp mrt inject` lost the rest; time to the last one)", gob.received)
	}
	fmt.Fprintf(w, "| gobgpd %s (`gobgp mrt inject global`) | %s%s | %s | n/a | %s |\n", gobgpdVersion(), ms(gob.announce), short, ms(gob.call), ms(gob.death))
	fmt.Fprintf(w, "\nRatio fabric/gobgpd, announce: %s; withdrawal after death: %s (below 1 is faster).\n",
		ratio(float64(fab.announce), float64(gob.announce)), ratio(float64(fab.death), float64(gob.death)))
	return nil
}

type bgpResult struct {
	announce, call, again, death time.Duration
	received                     uint64 // prefixes FRR counted, when short of all
}

// waitPfx polls FRR until peer has want prefixes (and, for want 0, is no
// longer established or has none).
func waitPfx(ctx context.Context, router *frr.Router, peer string, want uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last frr.Peer
	for {
		sum, err := router.Summary()
		if err == nil {
			last = sum[peer]
			if last.PfxRcd == want && (want > 0) == (last.State == "Established") {
				return nil
			}
			if want == 0 && last.State != "Established" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("frr: peer %s has %d prefixes (%s) after %s, want %d", peer, last.PfxRcd, last.State, limit, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func benchFabricSpeaker(ctx context.Context, cl *cleanup, router *frr.Router, ns, dir string, advs []bgp.Advertisement) (bgpResult, error) {
	var r bgpResult
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	cfg := bgp.DefaultConfig()
	cfg.RouterID = netip.MustParseAddr("10.78.1.2")
	cfg.LocalASN = 65001
	cfg.Peers = []bgp.PeerConfig{{Address: netip.MustParseAddr("10.78.1.1"), RemoteASN: 65000, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}}
	logf, err := os.Create(filepath.Join(dir, "speaker.log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	p, err := speakerproc.Start(ns, exe, nil, cfg, dir, logf)
	if err != nil {
		return r, err
	}
	cl.add(func() { p.Kill() })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitEstablished(wctx); err != nil {
		return r, err
	}
	start := time.Now()
	if r.call, err = p.Advertise(advs); err != nil {
		return r, err
	}
	if err := waitPfx(ctx, router, "10.78.1.2", uint64(len(advs)), 5*time.Minute); err != nil {
		return r, err
	}
	r.announce = time.Since(start)
	if r.again, err = p.Advertise(advs); err != nil {
		return r, err
	}
	start = time.Now()
	p.Kill()
	if err := waitPfx(ctx, router, "10.78.1.2", 0, time.Minute); err != nil {
		return r, err
	}
	r.death = time.Since(start)
	return r, nil
}

func benchGobgpd(ctx context.Context, cl *cleanup, router *frr.Router, ns, dir string, advs []bgp.Advertisement) (bgpResult, error) {
	var r bgpResult
	if _, err := exec.LookPath("gobgpd"); err != nil {
		return r, fmt.Errorf("gobgpd not installed (bash .ci/deps.sh bench)")
	}
	conf := filepath.Join(dir, "gobgpd.toml")
	if err := os.WriteFile(conf, []byte(`[global.config]
  as = 65002
  router-id = "10.78.2.2"
  port = -1
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.78.2.1"
    peer-as = 65000
  [neighbors.timers.config]
    connect-retry = 5
    hold-time = 9
    keepalive-interval = 3
`), 0o644); err != nil {
		return r, err
	}
	mrt := filepath.Join(dir, "prefixes.mrt")
	if err := os.WriteFile(mrt, mrtTableDump(advs, netip.MustParseAddr("10.78.2.2")), 0o644); err != nil {
		return r, err
	}
	api := "127.0.0.1:50051" // gobgpd's loopback in its own namespace
	cmd := exec.Command("ip", "netns", "exec", ns, "gobgpd", "-f", conf, "--api-hosts", api, "--pprof-disable", "-l", "warn")
	logf, err := os.Create(filepath.Join(dir, "gobgpd.log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	stop, _, err := cl.startProcessDone(cmd)
	if err != nil {
		return r, err
	}
	defer stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sum, _ := router.Summary()
		if sum["10.78.2.2"].State == "Established" {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("gobgpd: session to FRR not established within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "gobgp", "-u", "127.0.0.1", "-p", "50051", "mrt", "inject", "global", mrt).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("gobgp mrt inject: %w: %s", err, bytes.TrimSpace(out))
	}
	r.call = time.Since(start)
	// gobgp's mrt inject has been seen to lose a few hundred of 100k paths;
	// stop when the count is complete or has not moved for 5s, and report it.
	var last uint64
	lastMove := time.Now()
	for {
		sum, err := router.Summary()
		if err != nil {
			return r, err
		}
		n := sum["10.78.2.2"].PfxRcd
		if n != last {
			last, lastMove, r.announce = n, time.Now(), time.Since(start)
		}
		if n == uint64(len(advs)) || (n > 0 && time.Since(lastMove) > 5*time.Second) {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return r, fmt.Errorf("frr: %d of %d prefixes from gobgpd after 5m", n, len(advs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.received = last
	start = time.Now()
	cmd.Process.Kill()
	if err := waitPfx(ctx, router, "10.78.2.2", 0, time.Minute); err != nil {
		return r, err
	}
	r.death = time.Since(start)
	return r, nil
}

// mrtTableDump writes advs as an MRT TABLE_DUMP_V2 file (RFC 6396): one
// peer, then one RIB_IPV4_UNICAST record per prefix with ORIGIN IGP, an
// empty AS_PATH and NEXT_HOP nh. "gobgp mrt inject" streams it into gobgpd.
func mrtTableDump(advs []bgp.Advertisement, nh netip.Addr) []byte {
	var out bytes.Buffer
	record := func(subtype uint16, body []byte) {
		var h [12]byte
		binary.BigEndian.PutUint32(h[0:], uint32(time.Now().Unix()))
		binary.BigEndian.PutUint16(h[4:], 13) // TABLE_DUMP_V2
		binary.BigEndian.PutUint16(h[6:], subtype)
		binary.BigEndian.PutUint32(h[8:], uint32(len(body)))
		out.Write(h[:])
		out.Write(body)
	}
	id := nh.As4()
	// PEER_INDEX_TABLE: collector ID, empty view name, one AS4 IPv4 peer.
	peer := []byte{}
	peer = append(peer, id[:]...)
	peer = append(peer, 0, 0, 0, 1, 0x02)
	peer = append(peer, id[:]...)
	peer = append(peer, id[:]...)
	peer = binary.BigEndian.AppendUint32(peer, 65002)
	record(1, peer)
	attrs := []byte{0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4}
	attrs = append(attrs, id[:]...)
	for i, a := range advs {
		p := a.Prefix
		b := p.Addr().As4()
		body := binary.BigEndian.AppendUint32(nil, uint32(i))
		body = append(body, byte(p.Bits()))
		body = append(body, b[:(p.Bits()+7)/8]...)
		body = append(body, 0, 1, 0, 0) // one entry, peer index 0
		body = binary.BigEndian.AppendUint32(body, uint32(time.Now().Unix()))
		body = binary.BigEndian.AppendUint16(body, uint16(len(attrs)))
		body = append(body, attrs...)
		record(2, body) // RIB_IPV4_UNICAST
	}
	return out.Bytes()
}

func frrVersion() string {
	out, err := exec.Command(filepath.Join(frr.Daemons, "bgpd"), "--version").Output()
	if err != nil {
		return "(version unknown)"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "bgpd version"))
}

func gobgpdVersion() string {
	out, err := exec.Command("gobgpd", "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "gobgpd version"))
}
