package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logger routes gobgp's own logging into the speaker's slog logger, so its
// session and FSM messages land in the same structured stream.
type logger struct {
	log   *slog.Logger
	level atomic.Uint32
}

func newLogger(log *slog.Logger) *logger {
	l := &logger{log: log.With("subsys", "gobgp")}
	lvl := gobgplog.InfoLevel
	// gobgp skips building debug messages when its level says so; match it
	// to what the handler would keep.
	if log.Enabled(context.Background(), slog.LevelDebug) {
		lvl = gobgplog.DebugLevel
	}
	l.level.Store(uint32(lvl))
	return l
}

// attrs turns gobgp's field map into slog attributes in a stable order.
func attrs(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		name := k
		if k == gobgplog.FieldFacility {
			name = "facility"
		}
		out = append(out, slog.Any(name, fields[k]))
	}
	return out
}

func (l *logger) Panic(msg string, fields gobgplog.Fields) {
	l.log.Error(msg, attrs(fields)...)
	panic(fmt.Sprintf("gobgp: %s", msg))
}

// Fatal is used by gobgp where it cannot go on; a library must not exit
// the agent, so it panics with the message like Panic does.
func (l *logger) Fatal(msg string, fields gobgplog.Fields) {
	l.log.Error(msg, attrs(fields)...)
	panic(fmt.Sprintf("gobgp: fatal: %s", msg))
}

func (l *logger) Error(msg string, fields gobgplog.Fields) { l.log.Error(msg, attrs(fields)...) }
func (l *logger) Warn(msg string, fields gobgplog.Fields)  { l.log.Warn(msg, attrs(fields)...) }
func (l *logger) Info(msg string, fields gobgplog.Fields)  { l.log.Info(msg, attrs(fields)...) }
func (l *logger) Debug(msg string, fields gobgplog.Fields) { l.log.Debug(msg, attrs(fields)...) }

func (l *logger) SetLevel(level gobgplog.LogLevel) { l.level.Store(uint32(level)) }
func (l *logger) GetLevel() gobgplog.LogLevel      { return gobgplog.LogLevel(l.level.Load()) }
