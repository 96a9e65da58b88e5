package server

import (
	"bytes"
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
	chain   []*x509.Certificate // the certificates after the leaf in the server's chain
	cas     []*x509.Certificate
	bundle  string          // where cas came from, for messages
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
	if err := checkBundleHoldsCA(f.ca, cas); err != nil {
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

// checkBundleHoldsCA refuses a client CA bundle without a single CA
// certificate, such as a client certificate given in its place. Go's
// verifier lets a certificate in the pool pass as its own chain of one, so
// such a bundle would let in exactly the certificate it holds, and no
// client the CA issued.
func checkBundleHoldsCA(file string, cas []*x509.Certificate) error {
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
// configuration that serves them. base carries every setting that does not
// change with the material — versions, ALPN, client authentication, the
// verification hook — so a reload can never drop one of them. bundle names
// where the CAs came from, in messages; certFile, when the certificate came
// from a file, lets messages name the command that replaces it.
//
// It refuses what no client could get past: a server certificate outside
// its validity, a bundle in which no CA is valid now. What stops only some
// clients comes back as notices, for the caller to log once the material
// is in use.
func newMaterial(
	base *tls.Config,
	cert tls.Certificate,
	cas []*x509.Certificate,
	bundle string,
	certFile string,
	now time.Time,
) (*material, []notice, error) {
	if err := checkServerCertificate(&cert); err != nil {
		return nil, nil, err
	}
	leaf := cert.Leaf
	if leaf == nil {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0]) // parsed by checkServerCertificate
		cert.Leaf = leaf
	}
	// The fix names the one command that replaces the certificate in
	// place, names and all; pki init --force would replace the CA and
	// orphan every certificate it issued.
	command := ""
	if certFile != "" {
		command = " (from echoloop's PKI: " + pki.ReissueCommand(certFile, leaf) + ")"
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, nil, fmt.Errorf("server certificate %q expired at %s (this machine's clock says %s): "+
			"issue a new one%s", leaf.Subject.String(), stamp(leaf.NotAfter), stamp(now), command)
	case now.Before(leaf.NotBefore):
		return nil, nil, fmt.Errorf("server certificate %q is not valid until %s (this machine's clock "+
			"says %s): issue one that is valid now%s, or check this machine's clock",
			leaf.Subject.String(), stamp(leaf.NotBefore), stamp(now), command)
	}
	if len(cas) == 0 {
		return nil, nil, errors.New("no client CA given: a client certificate must chain to one")
	}
	notices, err := checkClientCAs(cas, bundle, now)
	if err != nil {
		return nil, nil, err
	}
	chain := make([]*x509.Certificate, 0, len(cert.Certificate)-1)
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("a certificate after the leaf in the server's chain does not parse: %w", err)
		}
		chain = append(chain, c)
	}
	notices = append(notices, checkServerChain(leaf, chain, cas, bundle, now)...)

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
	return &material{config: config, leaf: leaf, chain: chain, cas: cas, bundle: bundle, trusted: trusted},
		notices, nil
}

// notice is a warning about material that was taken into use.
type notice struct {
	msg  string
	args []any
}

// outsideValidity describes how now falls outside cert's validity, or
// returns "" when it does not.
func outsideValidity(cert *x509.Certificate, now time.Time) string {
	switch {
	case now.After(cert.NotAfter):
		return "expired at " + stamp(cert.NotAfter)
	case now.Before(cert.NotBefore):
		return "not valid until " + stamp(cert.NotBefore)
	}
	return ""
}

// checkClientCAs refuses a bundle in which no CA is valid now: Go's
// verifier checks every certificate of a chain against the clock, the root
// included, so such a server would refuse every client. A bundle in which
// only some are out of their validity gets a notice for each of them.
func checkClientCAs(cas []*x509.Certificate, bundle string, now time.Time) ([]notice, error) {
	var notices []notice
	var invalid []string
	for _, ca := range cas {
		problem := outsideValidity(ca, now)
		if problem == "" {
			continue
		}
		invalid = append(invalid, fmt.Sprintf("%q %s", ca.Subject.String(), problem))
		notices = append(notices, notice{
			msg:  "client CA outside its validity: clients it issued are refused until it is replaced",
			args: caArgs(bundle, ca),
		})
	}
	if len(invalid) < len(cas) {
		return notices, nil
	}
	return nil, fmt.Errorf("no CA in the client CA bundle %s is valid now, so no client certificate could be "+
		"verified: %s (this machine's clock says %s): make a new CA and issue the client certificates "+
		"from it (echoloop pki init --force for development), or renew the CA",
		bundle, strings.Join(invalid, "; "), stamp(now))
}

// checkServerChain finds what in the server's own chain clients will refuse
// it for, without stopping the server: an intermediate out of its validity,
// or a CA in the client bundle that issued the chain and is out of its own.
// A client that trusts another CA for this server may still accept it.
func checkServerChain(
	leaf *x509.Certificate,
	chain, cas []*x509.Certificate,
	bundle string,
	now time.Time,
) []notice {
	var notices []notice
	top := leaf
	for _, intermediate := range chain {
		top = intermediate
		if outsideValidity(intermediate, now) != "" {
			notices = append(notices, notice{
				msg:  "the server's chain holds a CA outside its validity: clients will refuse the server",
				args: caArgs(bundle, intermediate),
			})
		}
	}
	for _, ca := range cas {
		if !bytes.Equal(top.RawIssuer, ca.RawSubject) || top.CheckSignatureFrom(ca) != nil {
			continue
		}
		if outsideValidity(ca, now) != "" {
			notices = append(notices, notice{
				msg: "the CA that issued the server's certificate is outside its validity: " +
					"clients that trust it for this server will refuse the server",
				args: caArgs(bundle, ca),
			})
		}
	}
	return notices
}

// caArgs are the log attributes that name a CA certificate and its validity.
func caArgs(bundle string, ca *x509.Certificate) []any {
	return []any{KeyBundle, bundle, KeyCASubject, ca.Subject.String(),
		KeyCANotBefore, stamp(ca.NotBefore), KeyCANotAfter, stamp(ca.NotAfter)}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

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
