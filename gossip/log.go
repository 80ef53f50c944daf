package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// logWriter adapts memberlist's *log.Logger output ("[LEVEL] memberlist:
// msg") to slog, so memberlist's lines land in the same structured stream at
// the right level instead of on stderr.
type logWriter struct {
	log *slog.Logger
}

func (w logWriter) Write(p []byte) (int, error) {
	// log.Logger calls Write once per line; split anyway in case a message
	// carries newlines.
	for line := range bytes.Lines(p) {
		level, msg := parseMemberlistLine(string(line))
		if msg == "" {
			continue
		}
		w.log.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// parseMemberlistLine splits "[WARN] memberlist: msg" into its level and
// message; lines without a level are logged at Info.
func parseMemberlistLine(s string) (slog.Level, string) {
	s = strings.TrimSpace(s)
	level := slog.LevelInfo
	if strings.HasPrefix(s, "[") {
		if end := strings.IndexByte(s, ']'); end > 0 {
			switch s[1:end] {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			s = strings.TrimSpace(s[end+1:])
		}
	}
	s = strings.TrimPrefix(s, "memberlist: ")
	return level, s
}

// rateLimiter lets one log line per key through per interval, so that a
// misconfigured peer that keeps gossiping, or a slow subscriber, cannot flood
// the log.
type rateLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
}

func newRateLimiter(interval time.Duration) *rateLimiter {
	return &rateLimiter{interval: interval, last: make(map[string]time.Time)}
}

func (r *rateLimiter) allow(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if t, ok := r.last[key]; ok && now.Sub(t) < r.interval {
		return false
	}
	// Bound the map: a stream of distinct bogus node names must not grow it
	// without limit.
	if len(r.last) >= 1024 {
		for k, t := range r.last {
			if now.Sub(t) >= r.interval {
				delete(r.last, k)
			}
		}
		if len(r.last) >= 1024 {
			clear(r.last)
		}
	}
	r.last[key] = now
	return true
}
