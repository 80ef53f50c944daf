package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The probe is the check's traffic: a server in every workload that echoes
// what it gets over TCP and UDP, and a client that sends a fresh nonce and
// wants the same nonce back, so a stale or misdirected answer never passes.
// Both run as `fabric lab probe-serve` and `fabric lab probe` inside the
// workload's namespace, so the packets take the workload's real path.

// ProbePort is the TCP and the UDP port of every workload's probe server.
const ProbePort = 7777

// ServeProbe echoes on tcpPort and udpPort, IPv4 and IPv6, until ctx ends.
// Once every socket listens it creates readyFile (if not empty). Each TCP
// connection gets one line echoed; each UDP datagram is sent back.
func ServeProbe(ctx context.Context, tcpPort, udpPort int, readyFile string) error {
	var (
		lns      []net.Listener
		pcs      []net.PacketConn
		lc       net.ListenConfig
		wg       sync.WaitGroup
		closeAll = func() {
			for _, ln := range lns {
				ln.Close()
			}
			for _, pc := range pcs {
				pc.Close()
			}
		}
	)
	// One socket per family (tcp6 sockets are IPv6-only in Go), so the
	// server does not depend on the namespace's bindv6only.
	for _, f := range []struct{ family, host string }{{"4", "0.0.0.0"}, {"6", "::"}} {
		if tcpPort > 0 {
			ln, err := lc.Listen(ctx, "tcp"+f.family, net.JoinHostPort(f.host, strconv.Itoa(tcpPort)))
			if err != nil {
				closeAll()
				return fmt.Errorf("probe server: %w", err)
			}
			lns = append(lns, ln)
		}
		if udpPort > 0 {
			pc, err := lc.ListenPacket(ctx, "udp"+f.family, net.JoinHostPort(f.host, strconv.Itoa(udpPort)))
			if err != nil {
				closeAll()
				return fmt.Errorf("probe server: %w", err)
			}
			pcs = append(pcs, pc)
		}
	}
	for _, ln := range lns {
		wg.Go(func() { serveTCP(ln) })
	}
	for _, pc := range pcs {
		wg.Go(func() { serveUDP(pc) })
	}
	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
			closeAll()
			return fmt.Errorf("probe server: write ready file: %w", err)
		}
	}
	<-ctx.Done()
	closeAll()
	wg.Wait()
	return nil
}

func serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			// One line is echoed per line received, until the client
			// closes or is idle for 5s. A line "who NONCE" is answered
			// "who NONCE ADDR" with the address the connection reached
			// here: behind a service, the backend that was chosen.
			r := bufio.NewReader(c)
			for {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "who ") {
					line = strings.TrimSuffix(line, "\n") + " " + c.LocalAddr().String() + "\n"
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// Probe sends a nonce to addr (host:port) over proto ("tcp" or "udp") and
// waits up to timeout for it to come back. It returns the round trip time.
// UDP is sent again every timeout/5, so one lost datagram (say, while the
// neighbour is resolved) does not fail the probe.
func Probe(ctx context.Context, proto, addr string, timeout time.Duration) (time.Duration, error) {
	b := make([]byte, 16)
	rand.Read(b)
	nonce := hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	start := time.Now()
	var d net.Dialer
	switch proto {
	case "tcp":
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(deadline)
		if _, err := c.Write([]byte(nonce + "\n")); err != nil {
			return 0, err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("read echo: %w", err)
		}
		if line != nonce+"\n" {
			return 0, fmt.Errorf("echo %q is not the nonce sent", truncate(line, 40))
		}
		return time.Since(start), nil
	case "udp":
		c, err := d.DialContext(ctx, "udp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		resend := max(timeout/5, 10*time.Millisecond)
		buf := make([]byte, 2048)
		for {
			if _, err := c.Write([]byte(nonce)); err != nil {
				// ICMP errors (unreachable) surface here or in Read.
				return 0, err
			}
			next := time.Now().Add(resend)
			if next.After(deadline) {
				next = deadline
			}
			c.SetReadDeadline(next)
			for {
				n, err := c.Read(buf)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() && time.Now().Before(deadline) {
						break // send again
					}
					if errors.As(err, &ne) && ne.Timeout() {
						return 0, errors.New("no echo before the timeout")
					}
					return 0, err
				}
				if string(buf[:n]) == nonce {
					return time.Since(start), nil
				}
				// A late echo of an earlier probe: keep reading.
			}
		}
	}
	return 0, fmt.Errorf("probe: protocol %q is unknown: use tcp or udp", proto)
}

// WhoResult is what one connection of ProbeWho learnt: the server (backend)
// address that answered, and with a hold, the one that answered again on
// the same connection afterwards.
type WhoResult struct {
	Server string `json:"server,omitempty"`
	Again  string `json:"again,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ProbeWho opens n TCP connections to addr at once; on each it asks which
// address answered, and with hold > 0 it keeps the connection that long and
// asks again. It tells which backends a service spreads connections over,
// and whether established connections keep theirs.
func ProbeWho(ctx context.Context, addr string, n int, hold, timeout time.Duration) []WhoResult {
	out := make([]WhoResult, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() { out[i] = probeWho(ctx, addr, hold, timeout) })
	}
	wg.Wait()
	return out
}

func probeWho(ctx context.Context, addr string, hold, timeout time.Duration) WhoResult {
	var res WhoResult
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func() (string, error) {
		b := make([]byte, 8)
		rand.Read(b)
		q := "who " + hex.EncodeToString(b)
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte(q + "\n")); err != nil {
			return "", err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("read answer: %w", err)
		}
		server, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), q+" ")
		if !ok {
			return "", fmt.Errorf("answer %q is not to the question asked", truncate(line, 60))
		}
		return server, nil
	}
	if res.Server, err = ask(); err != nil {
		res.Error = err.Error()
		return res
	}
	if hold <= 0 {
		return res
	}
	select {
	case <-ctx.Done():
		res.Error = ctx.Err().Error()
		return res
	case <-time.After(hold):
	}
	if res.Again, err = ask(); err != nil {
		res.Error = "after the hold: " + err.Error()
	}
	return res
}

// StreamResult is what ProbeStream saw: how many probes went and came
// back, and the longest time without an answer (an outage), with when it
// began.
type StreamResult struct {
	Sent     int           `json:"sent"`
	Received int           `json:"received"`
	MaxGap   time.Duration `json:"maxGapNs"`
	GapFrom  time.Time     `json:"gapFrom"`
}

// ProbeStream sends a UDP probe to addr every interval for dur, each with
// its own sequence number, and measures the gaps between answers: the
// client's view of an outage, as a ping every interval would see it.
func ProbeStream(ctx context.Context, addr string, every, dur time.Duration) (StreamResult, error) {
	var res StreamResult
	c, err := net.Dial("udp", addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	start := time.Now()
	last := start
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			c.SetReadDeadline(start.Add(dur + time.Second))
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if n < 6 || string(buf[:6]) != "stream" {
				continue
			}
			now := time.Now()
			if gap := now.Sub(last); gap > res.MaxGap {
				res.MaxGap, res.GapFrom = gap, last
			}
			last = now
			res.Received++
		}
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for seq := 0; time.Since(start) < dur; seq++ {
		select {
		case <-ctx.Done():
			c.Close()
			<-done
			return res, ctx.Err()
		case <-t.C:
		}
		if _, err := fmt.Fprintf(c, "stream %d", seq); err == nil {
			res.Sent++
		}
	}
	time.Sleep(200 * time.Millisecond)
	c.Close()
	<-done
	// An outage still going on at the end counts until the end.
	if gap := time.Since(last); gap > res.MaxGap {
		res.MaxGap, res.GapFrom = gap, last
	}
	return res, nil
}
