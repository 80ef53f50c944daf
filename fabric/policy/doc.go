// Package policy owns network policy: parsing the policy documents users
// write, the selectors in them, and their compilation into per-endpoint
// verdict rules and traces. It knows nothing of the store or the datapath: it
// is handed policies, endpoints and identities, and returns plain values the
// agent stores or programs.
//
// # Accepted documents
//
// Parse accepts, unchanged, the L3/L4 part of Cilium's policy language
// (apiVersion cilium.io/v2, kinds CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy) and Kubernetes NetworkPolicy
// (networking.k8s.io/v1), several per file separated by "---", or wrapped in a
// v1 List. Unknown fields are errors, because a misspelt field that were
// ignored would silently widen the policy. Features Fabric cannot enforce yet
// (toFQDNs, toServices, fromNodes, host policies, ...) are errors for the
// same reason, with one exception: L7 rules (toPorts[].rules and the TLS
// fields) are accepted and kept, their L3/L4 part is enforced, and the policy
// carries a warning saying the L7 part is not.
//
// # Namespaces as labels
//
// Fabric has no Kubernetes API server, so namespaces exist only as endpoint
// labels, the ones Cilium uses:
//
//   - an endpoint's namespace is the label k8s:io.kubernetes.pod.namespace=<ns>
//     (NamespaceLabel); the source must be "k8s", so a label without source
//     does not place an endpoint in a namespace;
//   - a namespace's own labels are carried by its endpoints as
//     k8s:io.cilium.k8s.namespace.labels.<key>=<value> (NamespaceLabelsPrefix).
//
// A CiliumNetworkPolicy or NetworkPolicy in namespace ns therefore selects
// only endpoints labelled with ns, and its peer selectors (fromEndpoints,
// podSelector) match only endpoints of ns, unless a peer selector names the
// namespace label itself or a reserved label, as in Cilium. A NetworkPolicy
// namespaceSelector matches the namespace labels above, except the key
// kubernetes.io/metadata.name, which Kubernetes sets on every namespace to its
// name and which Fabric maps to the namespace label directly.
//
// # Selector keys and label sources
//
// A selector key may carry a source ("k8s:app"): it then matches only labels
// of that source. A key without source, or with source "any", matches the key
// in any source, as in Cilium.
package policy
