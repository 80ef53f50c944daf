package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
)

// netConf is the network configuration the runtime hands the plugin on
// stdin. Only socket and args.cni.labels are Fabric's own; the rest is the
// spec's.
type netConf struct {
	types.PluginConf
	// Socket is the agent's API socket; empty means api.DefaultSocket.
	Socket string `json:"socket,omitempty"`
	// Args follows the CNI conventions' "args" key: args.cni.labels is a
	// list of {"key","value"} objects.
	Args struct {
		CNI struct {
			Labels []confLabel `json:"labels,omitempty"`
		} `json:"cni"`
	} `json:"args"`

	// labels is args.cni.labels validated, name → value.
	labels map[string]string
}

type confLabel struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// maxSocketPath is the longest path a unix socket address holds
// (sun_path is 108 bytes with the terminating NUL).
const maxSocketPath = 107

// fieldHints say what a config field must be, for type errors: the runtime
// shows the message to an operator who wrote the JSON by hand.
var fieldHints = map[string]string{
	"socket":                `a string path, e.g. "/run/fabric/fabric.sock"`,
	"args":                  `an object, e.g. {"cni":{"labels":[{"key":"app","value":"web"}]}}`,
	"args.cni":              `an object, e.g. {"labels":[{"key":"app","value":"web"}]}`,
	"args.cni.labels":       `a list of {"key":"app","value":"web"} objects`,
	"args.cni.labels.key":   `a string, e.g. "app"`,
	"args.cni.labels.value": `a string, e.g. "web"`,
	"cniVersion":            `a string, e.g. "1.0.0"`,
	"name":                  `a string, the network's name`,
	"type":                  `a string, "fabric-cni"`,
}

// parseConfig decodes and validates the network configuration. Every error
// is a *types.Error whose message names the field and the fix.
func parseConfig(data []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, configDecodeError(err)
	}
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	if !filepath.IsAbs(conf.Socket) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("config: \"socket\" must be an absolute path, got %q", conf.Socket),
			"the runtime runs the plugin from an unknown directory; write e.g. \"/run/fabric/fabric.sock\"")
	}
	if len(conf.Socket) > maxSocketPath {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("config: \"socket\" is %d bytes long; a unix socket path holds at most %d", len(conf.Socket), maxSocketPath),
			"move the agent's socket to a shorter path")
	}
	if conf.IPAM.Type != "" {
		return nil, types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf("config: \"ipam\" (type %q) is not used by fabric-cni", conf.IPAM.Type),
			"the fabric agent assigns addresses from the node's pod CIDR; remove \"ipam\" from the network config")
	}
	conf.labels = make(map[string]string, len(conf.Args.CNI.Labels))
	for i, l := range conf.Args.CNI.Labels {
		field := fmt.Sprintf("args.cni.labels[%d]", i)
		if l.Key == "" {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("config: %q has an empty \"key\"", field), `write {"key":"app","value":"web"}`)
		}
		if err := addLabel(conf.labels, l.Key, l.Value); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("config: %q: %v", field, err), "")
		}
	}
	return conf, nil
}

func configDecodeError(err error) *types.Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("config: not valid JSON at byte %d: %v", syn.Offset, err), "the runtime passes the network config file's contents; fix its syntax")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("config: must be a JSON object, got %s", typ.Value), "")
		}
		hint, ok := fieldHints[field]
		if !ok {
			hint = "a " + typ.Type.String()
		}
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("config: %q must be %s, got %s", field, hint, typ.Value), "")
	default:
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("config: %v", err), "")
	}
}

// Names of the CNI_ARGS keys the plugin reads; runtimes pass more (e.g.
// IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID) and those are ignored.
const (
	argPodNamespace = "K8S_POD_NAMESPACE"
	argPodName      = "K8S_POD_NAME"
	argLabels       = "FABRIC_LABELS"
)

// LabelPodNamespace is the label K8S_POD_NAMESPACE becomes; its form is the
// one Cilium uses, so policies written for it read the same.
const LabelPodNamespace = "k8s:io.kubernetes.pod.namespace"

// cniArgs is what the plugin takes from CNI_ARGS.
type cniArgs struct {
	PodNamespace string
	PodName      string
	// labels is FABRIC_LABELS plus the pod namespace label, name → value.
	labels map[string]string
}

// parseArgs parses CNI_ARGS, "KEY=VALUE;KEY2=VALUE2" as the spec writes it.
// The value is everything after the first '=', so FABRIC_LABELS can use the
// agent's "k=v,k2=v2" label syntax.
func parseArgs(s string) (cniArgs, error) {
	a := cniArgs{labels: map[string]string{}}
	seen := map[string]string{}
	for elem := range strings.SplitSeq(s, ";") {
		elem = strings.TrimSpace(elem)
		if elem == "" {
			continue
		}
		key, value, ok := strings.Cut(elem, "=")
		if !ok || key == "" {
			return cniArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_ARGS: element %q is not KEY=VALUE", elem), "separate KEY=VALUE pairs with ';'")
		}
		if prev, dup := seen[key]; dup && prev != value {
			return cniArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_ARGS: %s given twice, as %q and %q", key, prev, value), "give each key once")
		}
		seen[key] = value
		switch key {
		case argPodNamespace:
			a.PodNamespace = value
		case argPodName:
			a.PodName = value
		}
	}
	if v := seen[argLabels]; v != "" {
		ls, err := identity.ParseLabels(v)
		if err != nil {
			return cniArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_ARGS %s: %v", argLabels, err), "write FABRIC_LABELS=app=web,tier=front")
		}
		for _, l := range ls.List() {
			a.labels[l.Name()] = l.Value
		}
	}
	if a.PodNamespace != "" {
		if err := addLabel(a.labels, LabelPodNamespace, a.PodNamespace); err != nil {
			return cniArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_ARGS %s: %v", argPodNamespace, err), "")
		}
	}
	return a, nil
}

// addLabel validates one label and adds it to m, refusing a second,
// different value for the same name.
func addLabel(m map[string]string, name, value string) error {
	if _, err := identity.LabelsFromMap(map[string]string{name: value}); err != nil {
		return err
	}
	if prev, ok := m[name]; ok && prev != value {
		return fmt.Errorf("label %q given twice, as %q and %q; keep one", name, prev, value)
	}
	m[name] = value
	return nil
}

// endpointLabels merges the label sources into the set the agent resolves
// to an identity. A name given with different values by two sources is an
// error rather than a silent precedence, since either choice would put the
// workload under a policy its operator did not write for it.
func endpointLabels(conf *netConf, a cniArgs) (identity.Labels, error) {
	merged := make(map[string]string, len(conf.labels)+len(a.labels))
	for _, src := range []struct {
		what string
		m    map[string]string
	}{{"config args.cni.labels", conf.labels}, {"CNI_ARGS", a.labels}} {
		names := make([]string, 0, len(src.m))
		for n := range src.m {
			names = append(names, n)
		}
		sort.Strings(names) // the first conflict reported is stable
		for _, n := range names {
			if prev, ok := merged[n]; ok && prev != src.m[n] {
				return identity.Labels{}, types.NewError(types.ErrInvalidNetworkConfig,
					fmt.Sprintf("label %q is %q in the config but %q in %s", n, prev, src.m[n], src.what),
					"give each label in one place")
			}
			merged[n] = src.m[n]
		}
	}
	if len(merged) == 0 {
		return identity.Labels{}, types.NewError(types.ErrInvalidNetworkConfig,
			"no labels for the endpoint: its identity needs at least one",
			`add "args":{"cni":{"labels":[{"key":"app","value":"web"}]}} to the network config, `+
				`or FABRIC_LABELS=app=web or K8S_POD_NAMESPACE=<ns> to CNI_ARGS`)
	}
	ls, err := identity.LabelsFromMap(merged)
	if err != nil {
		return identity.Labels{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("labels: %v", err), "")
	}
	return ls, nil
}

// endpointIDRE is the agent's rule for endpoint IDs (fabric/agent).
var endpointIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// EndpointID is the agent endpoint ID of one attachment: "<containerID>:<ifName>"
// when that fits the agent's rule, which it does for every container ID
// the CNI library accepts and ordinary interface names. Otherwise it is the
// name with invalid characters replaced, trimmed, and suffixed with 16 hex
// digits of its SHA-256, so two attachments never share an ID: a direct ID
// has exactly one ':' followed by at most 15 characters, and a hashed one
// has either no ':' or more than 15 characters after it.
func EndpointID(containerID, ifName string) string {
	raw := containerID + ":" + ifName
	if endpointIDRE.MatchString(raw) {
		return raw
	}
	sum := sha256.Sum256([]byte(raw))
	suffix := "-" + hex.EncodeToString(sum[:8])
	b := []byte(raw)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 128-len(suffix) {
		b = b[:128-len(suffix)]
	}
	if len(b) == 0 || !(b[0] >= 'a' && b[0] <= 'z' || b[0] >= 'A' && b[0] <= 'Z' || b[0] >= '0' && b[0] <= '9') {
		b = append([]byte{'x'}, b...)
		if len(b) > 128-len(suffix) {
			b = b[:128-len(suffix)]
		}
	}
	return string(b) + suffix
}

// HostIfName is the node-side veth name of an endpoint: "fx" and 11 hex
// digits of SHA-256 of its ID (13 characters, inside IFNAMSIZ). It is
// derived rather than stored so that DEL finds the veth without the agent
// and without the workload's netns, both of which may be gone.
func HostIfName(endpointID string) string {
	sum := sha256.Sum256([]byte(endpointID))
	return "fx" + hex.EncodeToString(sum[:])[:11]
}
