package cni

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/fabric-net/fabric/fabric/api"
	"github.com/fabric-net/fabric/fabric/identity"
)

// TestMain lets the root tests run this test binary as the plugin, the way
// a runtime runs a plugin binary: env, stdin, stdout, exit code.
func TestMain(m *testing.M) {
	if os.Getenv("FABRIC_CNI_TEST_AS_PLUGIN") == "1" {
		os.Exit(Main())
	}
	os.Exit(m.Run())
}

func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	return e
}

func TestParseConfig(t *testing.T) {
	ok := []struct {
		name, conf, socket string
		labels             map[string]string
	}{
		{"minimal", `{"cniVersion":"1.0.0","name":"fabric","type":"fabric-cni"}`, api.DefaultSocket, map[string]string{}},
		{"socket and labels", `{"cniVersion":"1.1.0","name":"fabric","type":"fabric-cni","socket":"/run/x/f.sock",
			"args":{"cni":{"labels":[{"key":"app","value":"web"},{"key":"k8s:tier","value":"front"}]}}}`,
			"/run/x/f.sock", map[string]string{"app": "web", "k8s:tier": "front"}},
		{"same label twice", `{"name":"n","args":{"cni":{"labels":[{"key":"app","value":"web"},{"key":"app","value":"web"}]}}}`,
			api.DefaultSocket, map[string]string{"app": "web"}},
		{"unknown fields ignored", `{"name":"n","runtimeConfig":{"x":1},"args":{"cni":{"ips":["10.0.0.1"]},"other":1}}`,
			api.DefaultSocket, map[string]string{}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := parseConfig([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			if conf.Socket != tc.socket {
				t.Errorf("socket %q, want %q", conf.Socket, tc.socket)
			}
			if len(conf.labels) != len(tc.labels) {
				t.Errorf("labels %v, want %v", conf.labels, tc.labels)
			}
			for k, v := range tc.labels {
				if conf.labels[k] != v {
					t.Errorf("label %s=%q, want %q", k, conf.labels[k], v)
				}
			}
		})
	}

	bad := []struct {
		name, conf string
		code       uint
		msg        string
	}{
		{"socket not a string", `{"name":"n","socket":42}`, types.ErrInvalidNetworkConfig, `config: "socket" must be a string path`},
		{"relative socket", `{"name":"n","socket":"fabric.sock"}`, types.ErrInvalidNetworkConfig, `"socket" must be an absolute path`},
		{"long socket", `{"name":"n","socket":"/` + strings.Repeat("s", 120) + `"}`, types.ErrInvalidNetworkConfig, "unix socket path holds at most 107"},
		{"not json", `{"name":`, types.ErrDecodingFailure, "config: "},
		{"syntax", `{"name":"n",}`, types.ErrDecodingFailure, "not valid JSON at byte"},
		{"not an object", `[1,2]`, types.ErrDecodingFailure, "must be a JSON object"},
		{"labels not a list", `{"name":"n","args":{"cni":{"labels":{"app":"web"}}}}`, types.ErrInvalidNetworkConfig, `"args.cni.labels" must be a list of`},
		{"label key not a string", `{"name":"n","args":{"cni":{"labels":[{"key":1,"value":"web"}]}}}`, types.ErrInvalidNetworkConfig, `"args.cni.labels.key" must be a string`},
		{"empty label key", `{"name":"n","args":{"cni":{"labels":[{"key":"","value":"web"}]}}}`, types.ErrInvalidNetworkConfig, `"args.cni.labels[0]" has an empty "key"`},
		{"bad label value", `{"name":"n","args":{"cni":{"labels":[{"key":"app","value":"a,b"}]}}}`, types.ErrInvalidNetworkConfig, `"args.cni.labels[0]": label "app"`},
		{"conflicting labels", `{"name":"n","args":{"cni":{"labels":[{"key":"app","value":"a"},{"key":"app","value":"b"}]}}}`, types.ErrInvalidNetworkConfig, `given twice`},
		{"ipam", `{"name":"n","ipam":{"type":"host-local"}}`, types.ErrUnsupportedField, `"ipam" (type "host-local") is not used`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.conf))
			if err == nil {
				t.Fatal("no error")
			}
			e := cniError(t, err)
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got code %d %q, want code %d containing %q", e.Code, e.Msg, tc.code, tc.msg)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	a, err := parseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;FABRIC_LABELS=app=web,tier=front")
	if err != nil {
		t.Fatal(err)
	}
	if a.PodNamespace != "prod" || a.PodName != "web-1" {
		t.Errorf("pod %s/%s", a.PodNamespace, a.PodName)
	}
	want := map[string]string{"app": "web", "tier": "front", LabelPodNamespace: "prod"}
	if len(a.labels) != len(want) {
		t.Errorf("labels %v, want %v", a.labels, want)
	}
	for k, v := range want {
		if a.labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, a.labels[k], v)
		}
	}

	if a, err := parseArgs(""); err != nil || len(a.labels) != 0 {
		t.Errorf("empty CNI_ARGS: %v %v", a, err)
	}

	for _, tc := range []struct{ args, msg string }{
		{"FOO", `element "FOO" is not KEY=VALUE`},
		{"=x", `element "=x" is not KEY=VALUE`},
		{"K8S_POD_NAMESPACE=a;K8S_POD_NAMESPACE=b", "K8S_POD_NAMESPACE given twice"},
		{"FABRIC_LABELS=app", "FABRIC_LABELS: label \"app\": '=' missing"},
		{"K8S_POD_NAMESPACE=a b", "K8S_POD_NAMESPACE"},
		{"FABRIC_LABELS=k8s:io.kubernetes.pod.namespace=x;K8S_POD_NAMESPACE=y", "given twice"},
	} {
		_, err := parseArgs(tc.args)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
			continue
		}
		if e := cniError(t, err); e.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("%q: code %d %q, want %q", tc.args, e.Code, e.Msg, tc.msg)
		}
	}
}

func TestEndpointLabels(t *testing.T) {
	conf, err := parseConfig([]byte(`{"name":"n","args":{"cni":{"labels":[{"key":"app","value":"web"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseArgs("K8S_POD_NAMESPACE=prod;FABRIC_LABELS=app=web,tier=front")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := endpointLabels(conf, a)
	if err != nil {
		t.Fatal(err)
	}
	// What the agent receives must parse back to the same set.
	back, err := identity.ParseLabels(ls.String())
	if err != nil || !back.Equal(ls) {
		t.Fatalf("labels %q do not round-trip: %v", ls, err)
	}
	if got, want := ls.String(), "app=web;k8s:io.kubernetes.pod.namespace=prod;tier=front"; got != want {
		t.Errorf("labels %q, want %q", got, want)
	}

	a2, _ := parseArgs("FABRIC_LABELS=app=db")
	if _, err := endpointLabels(conf, a2); err == nil || !strings.Contains(err.Error(), `label "app" is "web" in the config but "db" in CNI_ARGS`) {
		t.Errorf("conflict: %v", err)
	}
	empty, _ := parseConfig([]byte(`{"name":"n"}`))
	_, err = endpointLabels(empty, cniArgs{})
	if e := cniError(t, err); !strings.Contains(e.Msg, "no labels") || !strings.Contains(e.Details, "args") {
		t.Errorf("no labels: %v", e)
	}
}

func TestEndpointID(t *testing.T) {
	if got := EndpointID("abc123", "eth0"); got != "abc123:eth0" {
		t.Errorf("plain ID %q", got)
	}
	long := strings.Repeat("a", 200)
	odd := []struct{ cid, ifn string }{
		{"abc", "eth@0"}, {"abc", "eth_0"}, {long, "eth0"}, {long + "b", "eth0"}, {"", ""}, {"-x", "eth0"}, {"abc", "éth0"},
	}
	seen := map[string]bool{}
	for _, o := range odd {
		id := EndpointID(o.cid, o.ifn)
		if !endpointIDRE.MatchString(id) {
			t.Errorf("EndpointID(%q, %q) = %q breaks the agent's rule", o.cid, o.ifn, id)
		}
		if seen[id] {
			t.Errorf("EndpointID(%q, %q) = %q twice", o.cid, o.ifn, id)
		}
		seen[id] = true
		if h := HostIfName(id); len(h) != 13 || !strings.HasPrefix(h, "fx") {
			t.Errorf("HostIfName(%q) = %q", id, h)
		}
	}
	if HostIfName("a:eth0") == HostIfName("a:eth1") {
		t.Error("host names collide")
	}
}

func TestSpecFor(t *testing.T) {
	ep := api.Endpoint{ID: "c:eth0", IPs: []string{"fd00::5", "10.0.0.5/24"}, Gateways: []string{"10.0.0.1", "fd00::1"}, MTU: 1450}
	s, err := specFor(ep, "/run/netns/x", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Addrs) != 2 || s.Addrs[0].Prefix != netip.MustParsePrefix("fd00::5/128") || s.Addrs[0].Gateway != netip.MustParseAddr("fd00::1") ||
		s.Addrs[1].Prefix != netip.MustParsePrefix("10.0.0.5/32") || s.Addrs[1].Gateway != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("spec %+v", s)
	}
	for _, tc := range []struct {
		name string
		ep   api.Endpoint
		msg  string
	}{
		{"no ip", api.Endpoint{}, "no IP address"},
		{"no gateway", api.Endpoint{IPs: []string{"10.0.0.5"}}, "no gateway for 10.0.0.5"},
		{"bad ip", api.Endpoint{IPs: []string{"ten"}}, `"ten" is not an IP address`},
		{"two v4", api.Endpoint{IPs: []string{"10.0.0.5", "10.0.0.6"}, Gateways: []string{"10.0.0.1"}}, "two IPs of one family"},
		{"bad mtu", api.Endpoint{IPs: []string{"10.0.0.5"}, Gateways: []string{"10.0.0.1"}, MTU: 20}, "MTU 20"},
	} {
		if _, err := specFor(tc.ep, "", "eth0"); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}

// TestResultVersions: the result is valid in every version the plugin
// claims, as a runtime's library would parse it.
func TestResultVersions(t *testing.T) {
	s, err := specFor(api.Endpoint{ID: "c:eth0", IPs: []string{"10.0.0.5", "fd00::5"}, Gateways: []string{"10.0.0.1", "fd00::1"}}, "/run/netns/x", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	res := buildResult(s, linkState{MTU: 1450})
	for _, v := range versionInfo.SupportedVersions() {
		conv, err := res.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var buf bytes.Buffer
		if err := conv.PrintTo(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := version.NewResult(v, buf.Bytes())
		if err != nil {
			t.Fatalf("%s: parse %s: %v", v, buf.String(), err)
		}
		cur, err := types100.GetResult(back)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if len(cur.IPs) != 2 || cur.IPs[0].Interface == nil || *cur.IPs[0].Interface != 1 || cur.Interfaces[1].Sandbox != "/run/netns/x" {
			t.Errorf("%s: result %s", v, buf.String())
		}
	}
}

// TestStatus needs no root: STATUS only asks the agent.
func TestStatus(t *testing.T) {
	a := newFakeAgent(t)
	p := &plugin{stdout: new(bytes.Buffer), timeout: 5e9}
	conf := []byte(`{"cniVersion":"1.1.0","name":"fabric","type":"fabric-cni","socket":"` + a.socket + `"}`)
	if err := p.cmdStatus(&skel.CmdArgs{StdinData: conf}); err != nil {
		t.Fatalf("status: %v", err)
	}
	a.ipamProblem = "no pod CIDR: the store has no leader"
	e := cniError(t, p.cmdStatus(&skel.CmdArgs{StdinData: conf}))
	if e.Code != 50 || !strings.Contains(e.Msg, "no pod CIDR: the store has no leader") {
		t.Errorf("ipam problem: %+v", e)
	}
	gone := []byte(`{"cniVersion":"1.1.0","name":"fabric","socket":"/nonexistent/fabric.sock"}`)
	e = cniError(t, p.cmdStatus(&skel.CmdArgs{StdinData: gone}))
	if e.Code != 50 || !strings.Contains(e.Msg, "cannot reach the fabric agent at /nonexistent/fabric.sock: is it running?") {
		t.Errorf("agent gone: %+v", e)
	}
}

// TestAddAgentDown: with no agent, ADD fails before touching any
// interface, with "try again later", and needs no root to show it.
func TestAddAgentDown(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("network namespaces are Linux's")
	}
	p := &plugin{stdout: new(bytes.Buffer), timeout: 5e9}
	err := p.cmdAdd(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/proc/self/ns/net",
		Args:      "FABRIC_LABELS=app=web",
		StdinData: []byte(`{"cniVersion":"1.0.0","name":"fabric","socket":"/nonexistent/fabric.sock"}`)})
	e := cniError(t, err)
	if e.Code != types.ErrTryAgainLater || e.Msg != "cannot reach the fabric agent at /nonexistent/fabric.sock: is it running?" {
		t.Errorf("got %+v", e)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"fabric","type":"fabric-cni","socket":"/run/fabric/fabric.sock","args":{"cni":{"labels":[{"key":"app","value":"web"}]}}}`,
		`{"name":"n","socket":42}`, `{"args":{"cni":{"labels":[{"key":"reserved:host"}]}}}`, `[]`, `null`, `{"prevResult":{"cniVersion":"1.0.0"}}`,
		`{"ipam":{"type":"x"}}`, `{"args":{"cni":{"labels":[{"key":"a:b:c","value":"x"}]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := parseConfig(data)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Msg == "" {
				t.Fatalf("error %v is not a CNI error with a message", err)
			}
			return
		}
		if conf.Socket == "" || conf.Socket[0] != '/' || len(conf.Socket) > maxSocketPath {
			t.Fatalf("accepted socket %q", conf.Socket)
		}
		for n, v := range conf.labels {
			if _, err := identity.LabelsFromMap(map[string]string{n: v}); err != nil {
				t.Fatalf("accepted label %s=%q: %v", n, v, err)
			}
		}
	})
}

func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web", "FABRIC_LABELS=app=web,tier=front",
		"FOO", ";;", "=", "FABRIC_LABELS=reserved:host", "K8S_POD_NAMESPACE=a;K8S_POD_NAMESPACE=b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseArgs(s)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Msg == "" {
				t.Fatalf("error %v is not a CNI error with a message", err)
			}
			return
		}
		for n, v := range a.labels {
			if _, err := identity.LabelsFromMap(map[string]string{n: v}); err != nil {
				t.Fatalf("accepted label %s=%q: %v", n, v, err)
			}
		}
	})
}

func FuzzEndpointID(f *testing.F) {
	f.Add("abc", "eth0")
	f.Add("", "")
	f.Add(strings.Repeat("a", 130), "éth0")
	f.Fuzz(func(t *testing.T, cid, ifName string) {
		id := EndpointID(cid, ifName)
		if !endpointIDRE.MatchString(id) {
			t.Fatalf("EndpointID(%q, %q) = %q breaks the agent's rule", cid, ifName, id)
		}
		if h := HostIfName(id); len(h) != 13 {
			t.Fatalf("HostIfName(%q) = %q", id, h)
		}
	})
}
