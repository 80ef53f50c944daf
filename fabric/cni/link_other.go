//go:build !linux

package cni

import (
	"errors"

	"github.com/fabric-net/fabric/fabric/api"
)

// errNotSupported: veth pairs and network namespaces are Linux's; the
// plugin builds elsewhere so the control plane's packages do, and fails
// every command that touches interfaces.
var errNotSupported = errors.New("fabric-cni needs Linux (network namespaces and veth pairs)")

func checkNetns(string) error                               { return errNotSupported }
func setupLink(linkSpec) (linkState, error)                 { return linkState{}, errNotSupported }
func removeLink(string) error                               { return errNotSupported }
func checkLink(linkSpec, *api.Attachment) ([]string, error) { return nil, errNotSupported }
