package client

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// revocation is a certificate of the client's chain that a list at hand
// names as revoked.
type revocation struct {
	cert  *x509.Certificate
	entry x509.RevocationListEntry
}

// revokedAtHand looks the client's chain up in the revocation list file of
// [WithRevocationListFile]. A list counts only when the certificate's
// issuer signed it: the next certificate of the chain, a CA in the CA file,
// or a CA certificate the list file carries (as `pki revoke` writes an
// intermediate's list). It reports false when there is no file, no list
// naming the chain, or nothing to check a list's signature with.
func (c *Client) revokedAtHand() (revocation, bool) {
	if c.opts.crlFile == "" || c.opts.cert == nil {
		return revocation{}, false
	}
	chain, err := parseChain(c.opts.cert)
	if err != nil || len(chain) == 0 {
		return revocation{}, false
	}
	lists, err := pki.LoadCRLs(c.opts.crlFile)
	if err != nil {
		return revocation{}, false
	}
	issuers := append([]*x509.Certificate{}, c.opts.rootCerts...)
	if carried, err := pki.LoadCertificates(c.opts.crlFile); err == nil {
		issuers = append(issuers, carried...)
	}

	for i, cert := range chain {
		candidates := issuers
		if i+1 < len(chain) {
			candidates = append([]*x509.Certificate{chain[i+1]}, issuers...)
		}
		for _, crl := range lists {
			if !bytes.Equal(crl.RawIssuer, cert.RawIssuer) || !signedByOneOf(crl, candidates) {
				continue
			}
			for _, entry := range crl.RevokedCertificateEntries {
				if entry.SerialNumber.Cmp(cert.SerialNumber) == 0 {
					return revocation{cert: cert, entry: entry}, true
				}
			}
		}
	}
	return revocation{}, false
}

func signedByOneOf(crl *x509.RevocationList, candidates []*x509.Certificate) bool {
	for _, issuer := range candidates {
		if bytes.Equal(crl.RawIssuer, issuer.RawSubject) && crl.CheckSignatureFrom(issuer) == nil {
			return true
		}
	}
	return false
}

// describe says what the list says of the certificate.
func (r revocation) describe() string {
	reason := fmt.Sprintf("reason code %d", r.entry.ReasonCode)
	for name, code := range pki.RevocationReasons {
		if code == r.entry.ReasonCode {
			reason = name
		}
	}
	return fmt.Sprintf("%q (serial %s) revoked at %s, %s", r.cert.Subject.String(), pki.SerialHex(r.cert),
		r.entry.RevocationTime.UTC().Format(time.RFC3339), reason)
}
