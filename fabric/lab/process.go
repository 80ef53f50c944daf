package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procInfo reads the start time (clock ticks since boot) and the state letter
// of pid from /proc/PID/stat.
func procInfo(pid int) (start uint64, st byte, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after the last ')' are plain.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat start time: %w", pid, err)
	}
	return start, f[0][0], nil
}

func procCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), nil
}

// hasArg reports whether pid is alive (not a zombie) and has an argument
// for which match is true.
func hasArg(pid int, match func(string) bool) bool {
	if _, st, err := procInfo(pid); err != nil || st == 'Z' {
		return false
	}
	args, err := procCmdline(pid)
	if err != nil {
		return false
	}
	for _, a := range args {
		if match(a) {
			return true
		}
	}
	return false
}

// running reports whether n's recorded process is still our agent: same pid,
// same start time, and its command line names n's config. Any mismatch means
// the pid was reused by someone else's process.
func (n *nodeState) running() bool {
	if n.PID <= 0 {
		return false
	}
	start, _, err := procInfo(n.PID)
	if err != nil || start != n.StartTime {
		return false
	}
	ours := func(a string) bool { return a == n.Config }
	// While our process execs (`ip netns exec` becoming the agent) its
	// command line reads as empty for a moment: look again before calling
	// it gone. Only here, for one known pid: sweeps over every process
	// would wait on each kernel thread.
	// A loaded machine can take a while to load the binary: up to a
	// second, unless the process turns out to be a zombie.
	// Each try judges one reading of the command line: reading it twice
	// (empty, then the agent's own once the exec is done) once made a
	// live agent look like someone else's process.
	for try := 0; try < 200; try++ {
		if _, st, err := procInfo(n.PID); err != nil || st == 'Z' {
			return false
		}
		args, err := procCmdline(n.PID)
		if err != nil {
			return false
		}
		if slices.ContainsFunc(args, ours) {
			return true
		}
		if len(args) != 1 || args[0] != "" {
			return false // someone else's command line
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// isAgentConfig matches the --config argument of any agent of the lab, which
// finds agents whose pid never reached the state file.
func isAgentConfig(labDir string) func(string) bool {
	return func(a string) bool {
		return strings.HasPrefix(a, labDir+"/") && filepath.Base(a) == "agent.yaml"
	}
}

// isProbeServer matches the ready-file argument of any probe server of the
// lab.
func isProbeServer(labDir string) func(string) bool {
	return func(a string) bool {
		return strings.HasPrefix(a, labDir+"/") && strings.HasSuffix(a, probeReadySuffix)
	}
}

// running reports whether w's recorded probe server is still ours.
func (w *workloadState) probeRunning() bool {
	if w.ProbePID <= 0 {
		return false
	}
	start, _, err := procInfo(w.ProbePID)
	if err != nil || start != w.ProbeStartTime {
		return false
	}
	return hasArg(w.ProbePID, func(a string) bool { return a == w.ProbeReady })
}

// strayAgents scans /proc for agents of the lab.
func strayAgents(labDir string) []int { return strayProcs(isAgentConfig(labDir)) }

// strayProcs scans /proc for processes with an argument that ours matches.
func strayProcs(ours func(string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if hasArg(pid, ours) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopAgents ends the lab's agents: SIGTERM, up to grace for them to exit,
// then SIGKILL. Each signal is sent only after checking that the pid still
// runs one of our agents.
func stopAgents(labDir string, pids []int, grace time.Duration) error {
	return stopProcs(isAgentConfig(labDir), "agent", pids, grace)
}

// stopProcs ends processes as stopAgents does; ours tells the lab's own
// processes (of the kind what) from anyone else's by their arguments.
func stopProcs(ours func(string) bool, what string, pids []int, grace time.Duration) error {
	signal := func(pids []int, sig syscall.Signal) (alive []int, errs []error) {
		for _, pid := range pids {
			if !hasArg(pid, ours) {
				continue
			}
			if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("signal %s %d: %w", what, pid, err))
				continue
			}
			alive = append(alive, pid)
		}
		return alive, errs
	}
	alive, errs := signal(pids, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for len(alive) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		var still []int
		for _, pid := range alive {
			if hasArg(pid, ours) {
				still = append(still, pid)
			}
		}
		alive = still
	}
	if len(alive) > 0 {
		_, kerrs := signal(alive, syscall.SIGKILL)
		errs = append(errs, kerrs...)
	}
	return errors.Join(errs...)
}
