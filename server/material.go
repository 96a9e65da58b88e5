package server

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// material is the TLS identity of the server at one moment: its
// certificate, the CAs it trusts for clients, and the tls.Config built from
// them. A reload builds a new material and swaps it in whole; handshakes in
// progress keep the one they started with.
type material struct {
	config  *tls.Config
	leaf    *x509.Certificate
	cas     []*x509.Certificate
	trusted map[string]bool // raw subject+key of each CA, to recheck resumed sessions
	digest  [sha256.Size]byte
}

// credentialFiles are the files the material is read from, when it comes
// from files; nil when it was given in memory.
type credentialFiles struct {
	cert, key, ca string
}

// read loads the three files, with a digest of what they hold so a reload
// can tell whether anything changed; events in a watched directory are
// often about other files.
func (f *credentialFiles) read() (tls.Certificate, []*x509.Certificate, [sha256.Size]byte, error) {
	var digest [sha256.Size]byte
	pair, err := pki.LoadKeyPair(f.cert, f.key)
	if err != nil {
		return tls.Certificate{}, nil, digest, fmt.Errorf("loading server certificate: %w", err)
	}
	_, cas, err := pki.LoadCertPool(f.ca)
	if err != nil {
		return tls.Certificate{}, nil, digest, fmt.Errorf("loading client CA bundle: %w", err)
	}
	if err := checkClientCAs(f.ca, cas); err != nil {
		return tls.Certificate{}, nil, digest, err
	}
	key, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		return tls.Certificate{}, nil, digest, fmt.Errorf("loading server certificate: %w", err)
	}

	h := sha256.New()
	h.Write(key)
	for _, der := range pair.Certificate {
		h.Write(der)
	}
	for _, ca := range cas {
		h.Write(ca.Raw)
	}
	copy(digest[:], h.Sum(nil))
	return pair, cas, digest, nil
}

// checkClientCAs refuses a client CA bundle without a single CA
// certificate, such as a client certificate given in its place. Go's
// verifier lets a certificate in the pool pass as its own chain of one, so
// such a bundle would let in exactly the certificate it holds, and no
// client the CA issued.
func checkClientCAs(file string, cas []*x509.Certificate) error {
	held := make([]string, 0, len(cas))
	for _, ca := range cas {
		if ca.IsCA {
			return nil
		}
		kind := "a leaf certificate"
		switch {
		case slices.Contains(ca.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
			kind = "a server certificate"
		case slices.Contains(ca.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
			kind = "a client certificate"
		}
		held = append(held, fmt.Sprintf("%s, %s", kind, ca.Subject))
	}
	return fmt.Errorf("client CA bundle %q holds no CA certificate, only %s: give the CA that issued "+
		"the clients' certificates (ca.crt from echoloop pki init)", file, strings.Join(held, "; "))
}

// newMaterial checks a certificate and CA set and builds the TLS
// configuration that serves them; certFile, when the certificate came from
// a file, lets messages name the command that replaces it. base carries every setting that does not
// change with the material — versions, ALPN, client authentication, the
// verification hook — so a reload can never drop one of them.
func newMaterial(
	base *tls.Config,
	cert tls.Certificate,
	cas []*x509.Certificate,
	certFile string,
	now time.Time,
) (*material, error) {
	if err := checkServerCertificate(&cert); err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	if leaf == nil {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0]) // parsed by checkServerCertificate
		cert.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		fix := "issue a new one"
		if certFile != "" {
			// The one command that replaces it in place, names and all;
			// pki init --force would replace the CA and orphan every
			// certificate it issued.
			fix += " (from echoloop's PKI: " + pki.ReissueCommand(certFile, leaf) + ")"
		}
		return nil, fmt.Errorf("server certificate %q expired at %s (this machine's clock says %s): %s",
			leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339),
			now.UTC().Format(time.RFC3339), fix)
	}
	if len(cas) == 0 {
		return nil, errors.New("no client CA given: a client certificate must chain to one")
	}

	pool := x509.NewCertPool()
	trusted := map[string]bool{}
	for _, ca := range cas {
		pool.AddCert(ca)
		trusted[caKey(ca)] = true
	}
	config := base.Clone()
	config.Certificates = []tls.Certificate{cert}
	config.ClientCAs = pool
	config.GetConfigForClient = nil
	return &material{config: config, leaf: leaf, cas: cas, trusted: trusted}, nil
}

// caKey identifies a CA by name and key, as chain building does.
func caKey(ca *x509.Certificate) string {
	return string(ca.RawSubject) + "\x00" + string(ca.RawSubjectPublicKeyInfo)
}

// stillTrusted reports whether the root of a verified chain is among the
// CAs trusted now. A resumed session carries the chain verified when it was
// first made; after a CA is removed, its clients must not resume their way
// back in. Recent Go releases make a like check of their own on
// resumption; this one holds whichever Go builds the server.
func (m *material) stillTrusted(chain []*x509.Certificate) bool {
	return m.trusted[caKey(chain[len(chain)-1])]
}
