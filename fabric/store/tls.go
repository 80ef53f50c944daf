package store

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// The CA is derived, not distributed: every node computes the same key from
// the cluster secret and builds a byte-identical certificate (ed25519 signs
// deterministically, and every field below is fixed). Holding the secret is
// what makes a node a member; nothing else has to be copied around.
var (
	caNotBefore = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2124, 1, 1, 0, 0, 0, 0, time.UTC)
)

// leafLifetime is long because leaves are made fresh at every start and
// trust hangs on the CA; there is no rotation to run.
const leafLifetime = 10 * 365 * 24 * time.Hour

// tlsIdentity is one node's place in the cluster's store PKI.
type tlsIdentity struct {
	ca   *x509.Certificate
	pool *x509.CertPool
	leaf tls.Certificate
}

// deriveCA builds the cluster CA from the secret.
func deriveCA(secret []byte, cluster string) (*x509.Certificate, ed25519.PrivateKey, error) {
	if len(secret) == 0 {
		return nil, nil, errors.New("no cluster secret: the store RPC has no unauthenticated mode; set the cluster secret")
	}
	h := sha256.New()
	h.Write(secret)
	h.Write([]byte("fabric-store-ca"))
	h.Write([]byte(cluster))
	key := ed25519.NewKeyFromSeed(h.Sum(nil))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fabric-store-ca/" + cluster},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create store ca: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse store ca: %w", err)
	}
	return ca, key, nil
}

// newTLSIdentity derives the CA and issues this node a fresh leaf for the
// given IPs.
func newTLSIdentity(secret []byte, cluster, nodeID string, ips []net.IP) (*tlsIdentity, error) {
	ca, caKey, err := deriveCA(secret, cluster)
	if err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID},
		NotBefore:    now.Add(-time.Hour), // tolerate clock skew between nodes
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     []string{nodeID},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate for %s: %w", nodeID, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tlsIdentity{
		ca:   ca,
		pool: pool,
		leaf: tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: priv},
	}, nil
}

// serverConfig requires every client to present a certificate from the CA.
func (id *tlsIdentity) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.leaf},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.pool,
	}
}

// clientConfig trusts any server whose certificate chains to the CA. The
// host-name check is replaced by the chain check because servers are reached
// at addresses learned from gossip, which may differ from those in their
// certificates (NAT, several interfaces); membership is what matters.
func (id *tlsIdentity) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.leaf},
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("store server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         id.pool,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("store server certificate (CN %q) is not from this cluster's CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
			}
			return nil
		},
	}
}

// ErrAuth means the mutual TLS handshake with a store peer failed, the usual
// sign of a node with another cluster secret or cluster name. It is not
// retried: every server of the cluster would answer the same.
var ErrAuth = errors.New("store: tls authentication failed: check that this node has the same cluster secret and cluster name as the servers")

// tlsHint marks errors that come from a failed handshake with ErrAuth.
func tlsHint(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate") {
		return fmt.Errorf("%v: %w", err, ErrAuth)
	}
	return err
}

// tlsStreamLayer carries Raft traffic over the same mutual TLS as the RPC,
// so that only cluster members can append to the log or vote.
type tlsStreamLayer struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func newTLSStreamLayer(bind string, advertise string, id *tlsIdentity) (*tlsStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w", bind, err)
	}
	adv, err := advertised(advertise, ln.Addr())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("raft address: %w", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", adv)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("resolve raft advertise address %s: %w", adv, err)
	}
	return &tlsStreamLayer{
		Listener:  tls.NewListener(ln, id.serverConfig()),
		advertise: addr,
		client:    id.clientConfig(),
	}, nil
}

// Addr is the address other servers dial, which Raft records in its
// configuration.
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Dial implements raft.StreamLayer.
func (l *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", string(address), l.client)
	if err != nil {
		return nil, tlsHint(fmt.Errorf("dial raft peer %s: %w", address, err))
	}
	return conn, nil
}
