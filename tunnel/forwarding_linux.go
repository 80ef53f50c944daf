//go:build linux

package tunnel

import (
	"fmt"
	"os"
)

// EnableForwarding turns on IPv4 and IPv6 forwarding in the network
// namespace of the caller: a node routes its workloads' traffic to and from
// the rest of the world (outside the cluster, and in native mode between
// nodes through the stack). Idempotent.
func EnableForwarding() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if b, err := os.ReadFile(f); err == nil && len(b) > 0 && b[0] == '1' {
			continue
		}
		if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}
