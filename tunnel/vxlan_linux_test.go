//go:build linux

package tunnel

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inTestNetNS runs fn on a locked OS thread inside a fresh, unnamed network
// namespace, so nothing it creates can reach the machine's own namespace.
// The thread is never unlocked: Go discards it when the goroutine ends, and
// with it the namespace.
func inTestNetNS(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			t.Errorf("create network namespace: %v", err)
			return
		}
		defer ns.Close()
		fn()
	}()
	<-done
}

func TestEnsureVXLANRoot(t *testing.T) {
	inTestNetNS(t, func() {
		idx1, err := EnsureVXLAN("fabric_vxlan", VXLANPort, 1450)
		if err != nil {
			t.Errorf("first EnsureVXLAN: %v", err)
			return
		}
		idx2, err := EnsureVXLAN("fabric_vxlan", VXLANPort, 1450)
		if err != nil {
			t.Errorf("second EnsureVXLAN: %v", err)
			return
		}
		if idx1 != idx2 {
			t.Errorf("second EnsureVXLAN recreated the device: ifindex %d then %d", idx1, idx2)
		}
		link, err := netlink.LinkByIndex(idx2)
		if err != nil {
			t.Errorf("look up device: %v", err)
			return
		}
		v, ok := link.(*netlink.Vxlan)
		switch {
		case !ok:
			t.Errorf("device is %T, want vxlan", link)
		case !v.FlowBased || v.Port != VXLANPort || v.Learning:
			t.Errorf("device: flowbased=%v port=%d learning=%v", v.FlowBased, v.Port, v.Learning)
		case v.MTU != 1450 || v.Flags&(1<<0) == 0:
			t.Errorf("device: mtu=%d flags=%v, want 1450 and up", v.MTU, v.Flags)
		}
		// A changed MTU is applied in place.
		if idx3, err := EnsureVXLAN("fabric_vxlan", VXLANPort, 1400); err != nil || idx3 != idx1 {
			t.Errorf("EnsureVXLAN with a new MTU: ifindex %d, %v", idx3, err)
		}
		if err := RemoveVXLAN("fabric_vxlan"); err != nil {
			t.Errorf("RemoveVXLAN: %v", err)
		}
		if err := RemoveVXLAN("fabric_vxlan"); err != nil {
			t.Errorf("RemoveVXLAN of a missing device: %v", err)
		}
	})
}
