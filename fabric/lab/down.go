package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// stopGrace is how long agents get to exit after SIGTERM.
const stopGrace = 5 * time.Second

// Down stops the lab's agents and removes its namespaces and directory.
// It is idempotent.
func (l *Lab) Down() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := teardown(l.st.Name, l.st.Dir, l.st, l.log)
	return err
}

// Remove takes down the lab called name under dir (DefaultDir if empty)
// whether or not its state file survives: it stops the agents it can find,
// deletes every namespace in the state and every leftover fl-<name>-*
// namespace of that lab, and removes the lab's directory. A lab that does
// not exist is not an error; Remove says so on log.
func Remove(name, dir string, log io.Writer) error {
	if dir == "" {
		dir = DefaultDir
	}
	if log == nil {
		log = io.Discard
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	st, err := loadState(name, dir)
	if err != nil && !IsNotExist(err) {
		// A corrupt state file must not keep the lab from going away:
		// the sweep still finds its namespaces and agents.
		fmt.Fprintf(log, "lab %s: %v; sweeping instead\n", name, err)
	}
	found, err := teardown(name, dir, st, log)
	if !found && err == nil {
		fmt.Fprintf(log, "lab %s: nothing to do, no such lab\n", name)
	}
	return err
}

// teardown does the work of Down and Remove; st may be nil. It reports
// whether there was anything to remove.
func teardown(name, dir string, st *state, log io.Writer) (bool, error) {
	var errs []error
	found := st != nil
	ldir := labDir(dir, name)

	// Workloads first, while their agents still answer the plugin's DEL;
	// best effort, since the namespaces go away below in any case.
	if st != nil && len(st.WorkloadList) > 0 {
		fmt.Fprintf(log, "lab %s: removing %d workload(s)\n", name, len(st.WorkloadList))
		for i := range st.WorkloadList {
			for _, err := range removeWorkload(context.Background(), st, &st.WorkloadList[i]) {
				fmt.Fprintf(log, "lab %s: %v (going on)\n", name, err)
			}
		}
	}
	if pids := strayProcs(isProbeServer(ldir)); len(pids) > 0 {
		found = true
		fmt.Fprintf(log, "lab %s: stopping %d probe server(s)\n", name, len(pids))
		if err := stopProcs(isProbeServer(ldir), "probe server", pids, time.Second); err != nil {
			errs = append(errs, err)
		}
	}

	if stopped, err := stopRouter(ldir); stopped || err != nil {
		found = true
		fmt.Fprintf(log, "lab %s: stopped the FRR router\n", name)
		if err != nil {
			errs = append(errs, err)
		}
	}

	// Agents first: a namespace with a process in it outlives `ip netns
	// delete`. The recorded pids are checked against their start time;
	// the /proc scan finds agents whose pid never reached the state file.
	var pids []int
	if st != nil {
		for i := range st.NodeList {
			if n := &st.NodeList[i]; n.running() {
				pids = append(pids, n.PID)
			}
		}
	}
	for _, pid := range strayAgents(ldir) {
		if !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	if len(pids) > 0 {
		found = true
		fmt.Fprintf(log, "lab %s: stopping %d agent(s)\n", name, len(pids))
		if err := stopAgents(ldir, pids, stopGrace); err != nil {
			errs = append(errs, err)
		}
	}

	existing, err := listNetns()
	if err != nil {
		return found, errors.Join(append(errs, err)...)
	}
	var del []string
	if st != nil {
		for _, ns := range st.Namespaces {
			// The state is trusted only for names this lab could have made.
			if ownsNamespace(name, ns) && slices.Contains(existing, ns) {
				del = append(del, ns)
			}
		}
	}
	for _, ns := range existing {
		if ownsNamespace(name, ns) && !slices.Contains(del, ns) {
			del = append(del, ns)
		}
	}
	if len(del) > 0 {
		found = true
		fmt.Fprintf(log, "lab %s: deleting %d namespace(s)\n", name, len(del))
	}
	for _, ns := range del {
		if err := delNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}

	// The bpffs goes once no agent can hold a pin open. Whether or not the
	// state recorded it (st.BPFFS), a mount at the lab's mount point is the
	// lab's; no other path is trusted from the state file.
	unmounted := true
	if m := bpffsDir(dir, name); isMounted(m) {
		found = true
		fmt.Fprintf(log, "lab %s: unmounting bpffs %s\n", name, m)
		if err := unmountBPFFS(m); err != nil {
			errs = append(errs, err)
			unmounted = false
		}
	}

	if _, err := os.Stat(ldir); err == nil && unmounted {
		found = true
		if err := os.RemoveAll(ldir); err != nil {
			errs = append(errs, fmt.Errorf("remove lab dir: %w", err))
		}
	}
	if found && len(errs) == 0 {
		fmt.Fprintf(log, "lab %s: removed\n", name)
	}
	return found, errors.Join(errs...)
}
