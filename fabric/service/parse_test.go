package service

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fabric-net/fabric/fabric/identity"
)

const webYAML = `
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {tier: front}
  annotations:
    service.fabric.io/global: "true"
    service.fabric.io/maglev-table-size: "65521"
    io.cilium/lb-ipam-ips: "192.0.2.20, 2001:db8::20"
    example.com/owner: team-a
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  selector:
    app: web
    k8s:tier: front
  ports:
  - name: http
    port: 80
    targetPort: http-alt
    nodePort: 30080
  - name: dns
    protocol: UDP
    port: 53
    targetPort: 5353
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP: {timeoutSeconds: 600}
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  loadBalancerIP: 192.0.2.10
  externalIPs: [198.51.100.7]
`

func TestParseFull(t *testing.T) {
	svcs, err := Parse([]byte(webYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 {
		t.Fatalf("got %d services, want 1", len(svcs))
	}
	want := Service{
		Name: "web", Namespace: "shop",
		Labels: identity.MustParseLabels("tier=front"),
		Annotations: map[string]string{
			AnnotationGlobal: "true", AnnotationMaglevTableSize: "65521",
			AnnotationLBIPAMIPs: "192.0.2.20, 2001:db8::20", "example.com/owner": "team-a",
		},
		Type:      LoadBalancer,
		ClusterIP: netip.MustParseAddr("10.96.0.10"),
		Ports: []Port{
			{Name: "http", Port: 80, TargetPortName: "http-alt", NodePort: 30080},
			{Name: "dns", Protocol: UDP, Port: 53, TargetPort: 5353},
		},
		Selector:        identity.MustParseLabels("app=web,k8s:tier=front"),
		Affinity:        Affinity{ClientIP: true, Timeout: 10 * time.Minute},
		ExternalPolicy:  Local,
		InternalPolicy:  Cluster,
		LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("2001:db8::20")},
		ExternalIPs:     []netip.Addr{netip.MustParseAddr("198.51.100.7")},
		Global:          true,
		MaglevTableSize: 65521,
	}
	if !reflect.DeepEqual(svcs[0], want) {
		t.Errorf("got\n%+v\nwant\n%+v", svcs[0], want)
	}
	if got := svcs[0].Key(); got != "shop/web" {
		t.Errorf("Key() = %q", got)
	}
	if err := svcs[0].Validate(DefaultConfig()); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if got := svcs[0].TableSize(DefaultConfig()); got != 65521 {
		t.Errorf("TableSize = %d, want the override 65521", got)
	}
}

func TestParseDefaultsAndDocuments(t *testing.T) {
	in := `
# leading comment
---
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports: [{port: 80}]
---
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: other}
spec:
  type: NodePort
  sessionAffinity: ClientIP
  ports:
  - {name: x, port: 80}
  - {name: y, port: 80, protocol: UDP}
`
	svcs, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 2 {
		t.Fatalf("got %d services, want 2", len(svcs))
	}
	a, b := svcs[0], svcs[1]
	if a.Key() != "default/a" || a.Type != ClusterIP || a.ClusterIP.IsValid() || a.Affinity != (Affinity{}) ||
		a.ExternalPolicy != Cluster || a.InternalPolicy != Cluster || a.Global || a.MaglevTableSize != 0 {
		t.Errorf("defaults of a: %+v", a)
	}
	if p := a.Ports[0]; p != (Port{Port: 80}) {
		t.Errorf("port of a: %+v", p)
	}
	if tgt, _ := a.Ports[0].target(nil); tgt != 80 {
		t.Errorf("target of a port without targetPort: %d, want the port", tgt)
	}
	if a.TableSize(DefaultConfig()) != 16381 {
		t.Errorf("TableSize of a = %d, want the config's 16381", a.TableSize(DefaultConfig()))
	}
	if b.Key() != "other/b" || b.Type != NodePort || b.Affinity != (Affinity{true, DefaultAffinityTimeout}) {
		t.Errorf("b: %+v", b)
	}
	if svcs, err := Parse(nil); err != nil || len(svcs) != 0 {
		t.Errorf("Parse(nil) = %v, %v; want nothing", svcs, err)
	}
}

func TestParseErrors(t *testing.T) {
	const head = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
	tests := []struct {
		name, in string
		want     []string // substrings of the error
	}{
		{"port zero", head + "spec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 0}\n",
			[]string{"document 1 (default/web), line 7: spec.ports[1].port: 0 is not a port: use 1-65535"}},
		{"port too big", head + "spec: {ports: [{port: 70000}]}", []string{"spec.ports[0].port: 70000 is not a port: use 1-65535"}},
		{"port missing", head + "spec: {ports: [{name: a}]}", []string{"spec.ports[0].port: missing"}},
		{"port quoted", head + "spec: {ports: [{port: \"80\"}]}", []string{`spec.ports[0].port: is the string "80", want a whole number: write it unquoted`}},
		{"no ports", head + "spec: {type: ClusterIP}", []string{"spec.ports: no port"}},
		{"duplicate port", head + "spec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80, protocol: TCP}\n",
			[]string{"spec.ports[1].port: 80/TCP is also spec.ports[0]"}},
		{"port names", head + "spec: {ports: [{port: 80}, {name: a, port: 81}]}", []string{"spec.ports[0].name: empty while the service has 2 ports"}},
		{"same name", head + "spec: {ports: [{name: a, port: 80}, {name: a, port: 81}]}", []string{`spec.ports[1].name: "a" is also spec.ports[0].name`}},
		{"protocol", head + "spec: {ports: [{port: 80, protocol: tcp}]}", []string{`spec.ports[0].protocol: "tcp" is not a protocol: use TCP or UDP`}},
		{"sctp", head + "spec: {ports: [{port: 80, protocol: SCTP}]}", []string{"spec.ports[0].protocol: SCTP is not supported"}},
		{"target quoted number", head + "spec: {ports: [{port: 80, targetPort: \"8080\"}]}", []string{"spec.ports[0].targetPort: \"8080\" is a quoted number: write it unquoted"}},
		{"target bad name", head + "spec: {ports: [{port: 80, targetPort: Web_Port}]}", []string{`spec.ports[0].targetPort: "Web_Port" is not a port name`}},
		{"target zero", head + "spec: {ports: [{port: 80, targetPort: 0}]}", []string{"spec.ports[0].targetPort: 0 is not a port"}},
		{"nodePort on ClusterIP", head + "spec: {ports: [{port: 80, nodePort: 30001}]}", []string{"spec.ports[0].nodePort: set on a ClusterIP service: use type NodePort or LoadBalancer"}},
		{"duplicate nodePort", head + "spec: {type: NodePort, ports: [{name: a, port: 80, nodePort: 30001}, {name: b, port: 81, nodePort: 30001}]}",
			[]string{"spec.ports[1].nodePort: 30001/TCP is also spec.ports[0].nodePort"}},
		{"unknown spec field", head + "spec:\n  prots: []\n  ports: [{port: 80}]\n", []string{"line 5: spec.prots: unknown field: use one of type, clusterIP, ports"}},
		{"unknown field case", head + "spec: {ClusterIP: 10.96.0.1, ports: [{port: 80}]}", []string{"spec.ClusterIP: unknown field (did you mean clusterIP?)"}},
		{"unknown port field", head + "spec: {ports: [{port: 80, portt: 81}]}", []string{"spec.ports[0].portt: unknown field: use one of name, protocol, port, targetPort, nodePort"}},
		{"unknown metadata field", "apiVersion: v1\nkind: Service\nmetadata: {name: web, nmespace: x}\nspec: {ports: [{port: 80}]}", []string{"metadata.nmespace: unknown field"}},
		{"unknown top field", head + "spec: {ports: [{port: 80}]}\nextra: 1\n", []string{"line 5: extra: unknown field: use one of apiVersion, kind, metadata, spec"}},
		{"status", head + "spec: {ports: [{port: 80}]}\nstatus: {}\n", []string{"status: is written by the cluster, not read"}},
		{"unsupported field", head + "spec: {ipFamilies: [IPv4], ports: [{port: 80}]}", []string{"spec.ipFamilies: is not supported yet"}},
		{"duplicate key", head + "spec:\n  ports: [{port: 80}]\n  ports: [{port: 81}]\n", []string{"line 6: spec.ports: given twice: keep one"}},
		{"headless", head + "spec: {clusterIP: None, ports: [{port: 80}]}", []string{"spec.clusterIP: None (a headless service) is not supported yet"}},
		{"bad cluster IP", head + "spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}", []string{`spec.clusterIP: "10.96.0.300" is not an IP address`}},
		{"loopback cluster IP", head + "spec: {clusterIP: 127.0.0.1, ports: [{port: 80}]}", []string{"spec.clusterIP: 127.0.0.1 is loopback"}},
		{"type", head + "spec: {type: Nodeport, ports: [{port: 80}]}", []string{`spec.type: "Nodeport" is not a type: use ClusterIP, NodePort or LoadBalancer`}},
		{"external name", head + "spec: {type: ExternalName, ports: [{port: 80}]}", []string{"spec.type: ExternalName is not supported"}},
		{"affinity", head + "spec: {sessionAffinity: Client, ports: [{port: 80}]}", []string{`spec.sessionAffinity: "Client" is not a session affinity`}},
		{"affinity timeout", head + "spec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 80}]}",
			[]string{"spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range: use 1-86400 seconds"}},
		{"affinity config without affinity", head + "spec: {sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}, ports: [{port: 80}]}",
			[]string{"spec.sessionAffinityConfig: set while sessionAffinity is None"}},
		{"policy", head + "spec: {type: NodePort, externalTrafficPolicy: local, ports: [{port: 80}]}", []string{`spec.externalTrafficPolicy: "local" is not a traffic policy: use Cluster or Local`}},
		{"external policy on ClusterIP", head + "spec: {externalTrafficPolicy: Local, ports: [{port: 80}]}", []string{"spec.externalTrafficPolicy: Local on a ClusterIP service without externalIPs"}},
		{"lb IP on ClusterIP", head + "spec: {loadBalancerIP: 192.0.2.1, ports: [{port: 80}]}", []string{"spec.loadBalancerIP: load-balancer addresses requested for a ClusterIP service"}},
		{"lb annotation", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    io.cilium/lb-ipam-ips: 192.0.2.1,nope\nspec: {type: LoadBalancer, ports: [{port: 80}]}",
			[]string{`line 6: metadata.annotations["io.cilium/lb-ipam-ips"]: "nope" is not an IP address`}},
		{"global not bool", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {service.fabric.io/global: \"yes\"}\nspec: {ports: [{port: 80}]}",
			[]string{`metadata.annotations["service.fabric.io/global"]: "yes" is not a boolean: use "true" or "false"`}},
		{"global unquoted", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {service.fabric.io/global: true}\nspec: {ports: [{port: 80}]}",
			[]string{`metadata.annotations["service.fabric.io/global"]: is the boolean true, want a string: quote it, "true"`}},
		{"table size", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {service.fabric.io/maglev-table-size: \"16384\"}\nspec: {ports: [{port: 80}]}",
			[]string{`metadata.annotations["service.fabric.io/maglev-table-size"]: 16384 is not prime: use a prime, such as 16411`}},
		{"unknown fabric annotation", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {service.fabric.io/globl: \"true\"}\nspec: {ports: [{port: 80}]}",
			[]string{`metadata.annotations["service.fabric.io/globl"]: unknown Fabric annotation`}},
		{"external IP twice", head + "spec: {externalIPs: [192.0.2.1, 192.0.2.1], ports: [{port: 80}]}", []string{"spec.externalIPs[1]: 192.0.2.1 is given twice"}},
		{"selector", head + "spec: {selector: {app: \"a b\"}, ports: [{port: 80}]}", []string{`spec.selector: label "app": value "a b" has invalid character`}},
		{"selector reserved", head + "spec: {selector: {\"reserved:host\": \"\"}, ports: [{port: 80}]}", []string{`spec.selector: "reserved:host" is a reserved label`}},
		{"labels number", "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {version: 2}}\nspec: {ports: [{port: 80}]}",
			[]string{`metadata.labels["version"]: is the number 2, want a string: quote it, "2"`}},
		{"name", "apiVersion: v1\nkind: Service\nmetadata: {name: Web}\nspec: {ports: [{port: 80}]}", []string{`metadata.name: "Web" is not a service name`}},
		{"no metadata", "apiVersion: v1\nkind: Service\nspec: {ports: [{port: 80}]}", []string{"metadata: missing"}},
		{"kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}", []string{
			`apiVersion: "apps/v1" is not supported: use v1`, `kind: "Deployment" is not a Service`}},
		{"missing kind", "apiVersion: v1\nmetadata: {name: web}\n", []string{"kind: missing: add kind: Service"}},
		{"not a mapping", "- a\n- b\n", []string{"document 1, line 1: is a list, want a mapping"}},
		{"spec not a mapping", head + "spec: [1]\n", []string{"spec: is a list, want a mapping"}},
		{"ports not a list", head + "spec: {ports: {port: 80}}\n", []string{"spec.ports: is a mapping, want a list"}},
		{"merge key", head + "x: &p {port: 80}\nspec: {ports: [{<<: *p}]}\n", []string{"spec.ports[0]: has a key that is not a field name"}},
		{"syntax", "apiVersion: v1\nkind: [\n", []string{"document 1: yaml:"}},
		{"duplicate service", head + "spec: {ports: [{port: 80}]}\n---\n" + head + "spec: {ports: [{port: 81}]}\n",
			[]string{"document 2 (default/web), line 8: metadata.name: service default/web is also document 1"}},
		{"second document", head + "spec: {ports: [{port: 80}]}\n---\n" + "apiVersion: v1\nkind: Service\nmetadata: {name: two}\nspec: {ports: [{port: -1}]}\n",
			[]string{"document 2 (default/two), line 9: spec.ports[0].port: -1 is not a port"}},
		{"all problems", head + "spec:\n  type: Bad\n  ports: [{port: 0}]\n  bogus: 1\n", []string{"spec.type:", "spec.ports[0].port:", "spec.bogus:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("no error; got %+v", svcs)
			}
			if svcs != nil {
				t.Errorf("services returned with an error: %+v", svcs)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestParseAliases(t *testing.T) {
	in := `
apiVersion: v1
kind: Service
metadata: {name: web, labels: &l {app: web}}
spec:
  selector: *l
  ports: [{port: &p 80, targetPort: *p}]
`
	svcs, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if s := svcs[0]; !s.Selector.Equal(identity.MustParseLabels("app=web")) || s.Ports[0].TargetPort != 80 {
		t.Errorf("aliases not followed: %+v", s)
	}
}

func TestValidate(t *testing.T) {
	ok := Service{Name: "web", Namespace: "default", Type: NodePort, Ports: []Port{{Port: 80, NodePort: 30080}}}
	if err := ok.Validate(DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	narrow := DefaultConfig()
	narrow.NodePortMin, narrow.NodePortMax = 31000, 31999
	err := ok.Validate(narrow)
	if err == nil || !strings.Contains(err.Error(), "service default/web: spec.ports[0].nodePort: 30080 is outside the node port range 31000-31999") {
		t.Errorf("nodePort outside a configured range: %v", err)
	}
	// Parse leaves the range to Validate: it does not know the configuration.
	if _, err := Parse([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 40000}]}")); err != nil {
		t.Errorf("Parse checked the node port range: %v", err)
	}
	tests := []struct {
		svc  Service
		want string
	}{
		{Service{Name: "web", Ports: []Port{{Port: 80}}}, `metadata.namespace: "" is not a namespace`},
		{Service{Name: "web", Namespace: "default", Ports: []Port{{Port: 80, TargetPort: 8080, TargetPortName: "http"}}}, "spec.ports[0].targetPort: both the number 8080 and the name \"http\" are set"},
		{Service{Name: "web", Namespace: "default", Ports: []Port{{Port: 80, Protocol: 7}}}, "spec.ports[0].protocol: Protocol(7) is not supported"},
		{Service{Name: "web", Namespace: "default", Type: 9, Ports: []Port{{Port: 80}}}, "spec.type: Type(9) is not a type"},
		{Service{Name: "web", Namespace: "default", Ports: []Port{{Port: 80}}, Affinity: Affinity{ClientIP: true}}, "timeoutSeconds: 0s is out of range"},
		{Service{Name: "web", Namespace: "default", Ports: []Port{{Port: 80}}, MaglevTableSize: 100}, "maglev-table-size\"]: 100 is out of range"},
		{Service{Name: "web", Namespace: "default", Ports: []Port{{Port: 80}}, ExternalIPs: []netip.Addr{{}}}, "spec.externalIPs[0]: invalid IP is not an address"},
	}
	for _, tt := range tests {
		err := tt.svc.Validate(DefaultConfig())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v; want %q", tt.svc, err, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{NodePortMin: 0, NodePortMax: 100, MaglevTableSize: 16381},
		{NodePortMin: 200, NodePortMax: 100, MaglevTableSize: 16381},
		{NodePortMin: 30000, NodePortMax: 32767, MaglevTableSize: 16383},
		{NodePortMin: 30000, NodePortMax: 32767},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", c)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(webYAML)
	for _, s := range []string{
		"", "---\n---\n", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 0}], prots: 1}\n",
		"a: &a [*a]\n", "x: &x {y: *x}\nspec: *x\n", "- [\n", "{<<: {a: 1}}",
		"apiVersion: v1\nkind: Service\nmetadata: {name: a, annotations: {io.cilium/lb-ipam-ips: ',,,'}}\nspec: {type: LoadBalancer, ports: [{port: 1, targetPort: x}]}\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		svcs, err := Parse([]byte(in))
		if err != nil {
			if svcs != nil {
				t.Fatalf("services with an error: %v", err)
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("error without a message")
			}
			return
		}
		for _, s := range svcs {
			// What Parse accepts passes every check that does not depend on
			// the configuration, and Validate does not panic on it.
			if errs := s.check(nil); len(errs) > 0 {
				t.Fatalf("Parse accepted %s with problems: %v", s.Key(), errs[0])
			}
			_ = s.Validate(DefaultConfig())
		}
	})
}
