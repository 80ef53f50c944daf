package store

import (
	"context"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// raftFSM adapts FSM to raft.FSM. Raft calls Apply from one goroutine in log
// order; the result travels back to the leader's caller through the future.
type raftFSM struct{ fsm *FSM }

type applyResult struct {
	res TxnResult
	err error
}

func (r *raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return applyResult{}
	}
	res, err := r.fsm.Apply(l.Data)
	return applyResult{res: res, err: err}
}

func (r *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	return &raftSnapshot{snap: r.fsm.Snapshot()}, nil
}

func (r *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return r.fsm.Restore(rc)
}

type raftSnapshot struct{ snap *Snapshot }

func (s *raftSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.snap.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *raftSnapshot) Release() {}

// slogSink routes hashicorp's hclog into slog. Raft logs every heartbeat
// failure and election step at Info/Debug; only warnings and errors reach
// the agent's log so that a flapping peer does not flood it.
type slogSink struct {
	log *slog.Logger
	min hclog.Level
}

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level < s.min {
		return
	}
	lvl := slog.LevelInfo
	switch {
	case level >= hclog.Error:
		lvl = slog.LevelError
	case level == hclog.Warn:
		lvl = slog.LevelWarn
	case level <= hclog.Debug:
		lvl = slog.LevelDebug
	}
	s.log.Log(context.Background(), lvl, msg, append([]any{"component", name}, args...)...)
}

func newRaftLogger(log *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Warn,
		Output: io.Discard,
	})
	l.RegisterSink(slogSink{log: log, min: hclog.Warn})
	return l
}
