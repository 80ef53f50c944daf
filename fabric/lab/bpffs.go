package lab

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// The lab's bpffs. Agents pin their maps and links under a folder of their
// own on it, so a restarted agent finds the datapath it left. It is mounted
// in the machine's mount namespace (it touches no network namespace) before
// the first agent starts, because `ip netns exec` gives each agent a copy of
// the mount table as it was then.

// mountBPFFS mounts a bpffs at dir unless one is already there, and makes
// one folder per node on it.
func mountBPFFS(dir string, nodes []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point: %w", err)
	}
	if !isMounted(dir) {
		if _, err := run("mount", "-t", "bpf", "bpf", dir); err != nil {
			return fmt.Errorf("mount the lab's bpffs (needs CONFIG_BPF_SYSCALL and root): %w", err)
		}
	}
	for _, n := range nodes {
		if err := os.MkdirAll(dir+"/"+n, 0o700); err != nil {
			return fmt.Errorf("create bpffs folder of %s: %w", n, err)
		}
	}
	return nil
}

// unmountBPFFS lazily unmounts dir if something is mounted there; lazy so
// that a process still holding a pin open cannot keep the lab alive.
func unmountBPFFS(dir string) error {
	if !isMounted(dir) {
		return nil
	}
	if _, err := run("umount", "-l", dir); err != nil {
		return fmt.Errorf("unmount the lab's bpffs: %w", err)
	}
	return nil
}

// isMounted reports whether dir is a mount point in our mount namespace.
func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Field 5 is the mount point, with spaces and the like escaped
		// as octal; lab paths have none.
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && fs[4] == dir {
			return true
		}
	}
	return false
}
