package client

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// CertificateProblem is what is wrong with a client certificate, found on
// the client's side alone.
type CertificateProblem struct {
	// Cause says what is wrong, naming the certificate.
	Cause string
	// Fix says what to do.
	Fix string
}

// CheckClientCertificate looks for what would make any correct server
// refuse cert, without asking one: a validity window that excludes now, a CA
// certificate where a leaf belongs, a leaf or intermediate whose extended
// key usages exclude client authentication, a self-signed leaf. name is how
// messages refer to the certificate. It returns nil when it finds nothing.
func CheckClientCertificate(cert *tls.Certificate, name string, now time.Time) *CertificateProblem {
	return checkClientCertificate(cert, name, "", now)
}

// checkClientCertificate is [CheckClientCertificate] for a certificate
// read from file ("" when it was not), which lets a fix name the command
// that replaces it.
func checkClientCertificate(cert *tls.Certificate, name, file string, now time.Time) *CertificateProblem {
	chain, err := parseChain(cert)
	if err != nil || len(chain) == 0 {
		return nil // the loader has already refused what does not parse
	}
	if problem := checkChainValidity(chain, name, file, now); problem != nil {
		return problem
	}
	return checkPurpose(chain, name)
}

// checkChainValidity finds a certificate of the chain whose validity
// excludes now: the leaf, or an intermediate sent with it. file is where
// the chain was read from, or "".
func checkChainValidity(chain []*x509.Certificate, name, file string, now time.Time) *CertificateProblem {
	if problem := checkValidity(chain[0], name, file, now); problem != nil {
		return problem
	}
	for _, intermediate := range chain[1:] {
		if state := outOfValidity(intermediate, now); state != "" {
			return &CertificateProblem{
				Cause: fmt.Sprintf("the intermediate CA in %s, %s", name, state),
				Fix:   "renew the intermediate and reissue the client certificate from it, or correct this machine's clock",
			}
		}
	}
	return nil
}

// checkValidity finds a validity window that excludes now. file is where
// the certificate was read from, or "".
func checkValidity(leaf *x509.Certificate, name, file string, now time.Time) *CertificateProblem {
	switch {
	case now.Before(leaf.NotBefore):
		return &CertificateProblem{
			Cause: fmt.Sprintf("%s is not yet valid: valid from %s, and this machine's clock says %s",
				name, stamp(leaf.NotBefore), stamp(now)),
			Fix: "check both machines' clocks, or issue a certificate whose validity starts earlier",
		}
	case now.After(leaf.NotAfter):
		return &CertificateProblem{
			Cause: fmt.Sprintf("%s has expired: valid until %s, and this machine's clock says %s",
				name, stamp(leaf.NotAfter), stamp(now)),
			Fix: reissueFix(leaf, file),
		}
	}
	return nil
}

// reissueFix is what to do about an expired client certificate: the
// command that replaces that one certificate, when it was read from a file.
// pki init --force would replace the CA as well, and the server would trust
// none of the certificates it issued.
func reissueFix(leaf *x509.Certificate, file string) string {
	if file == "" {
		return fmt.Sprintf("issue a new client certificate (from echoloop's PKI: echoloop pki issue "+
			"client %s --force; or ask your CA)", leaf.Subject.CommonName)
	}
	return fmt.Sprintf("issue a new client certificate (from echoloop's PKI: %s; or ask your CA)",
		pki.ReissueCommand(file, leaf))
}

// checkPurpose finds a chain that cannot authenticate a client: a CA as
// the leaf, an extended key usage list without clientAuth on the leaf or an
// intermediate, a self-signed leaf.
func checkPurpose(chain []*x509.Certificate, name string) *CertificateProblem {
	leaf := chain[0]
	switch {
	case leaf.IsCA:
		return &CertificateProblem{
			Cause: fmt.Sprintf("%s is a CA certificate (%s), not a client certificate", name, leaf.Subject),
			Fix:   "present a client certificate that this CA issued, not the CA's own",
		}
	case !allowsClientAuth(leaf):
		return &CertificateProblem{
			Cause: fmt.Sprintf("%s is not for client authentication: its extended key usages are %s",
				name, usageNames(leaf.ExtKeyUsage)),
			Fix: "issue a certificate with the clientAuth extended key usage " +
				"(a server certificate cannot stand in for a client one)",
		}
	}
	for _, intermediate := range chain[1:] {
		if !allowsClientAuth(intermediate) {
			return &CertificateProblem{
				Cause: fmt.Sprintf("the intermediate %q in %s does not allow client authentication: "+
					"its extended key usages are %s, and a leaf may not exceed its issuers",
					intermediate.Subject.String(), name, usageNames(intermediate.ExtKeyUsage)),
				Fix: "issue the client certificate from an intermediate that allows clientAuth " +
					"(or has no extended key usage list)",
			}
		}
	}
	if isSelfSigned(leaf) {
		return &CertificateProblem{
			Cause: fmt.Sprintf("%s is self-signed: no CA vouches for it", name),
			Fix:   "present a certificate issued by a CA the server trusts",
		}
	}
	return nil
}

func parseChain(cert *tls.Certificate) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for i, raw := range cert.Certificate {
		if i == 0 && cert.Leaf != nil {
			chain = append(chain, cert.Leaf)
			continue
		}
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// allowsClientAuth follows RFC 5280: no EKU extension means any purpose.
func allowsClientAuth(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// isSelfSigned checks the signature directly: CheckSignatureFrom would
// insist that the signer be a CA, which a self-signed leaf is not.
func isSelfSigned(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, cert.RawSubject) &&
		cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) == nil
}

func usageNames(usages []x509.ExtKeyUsage) string {
	if len(usages) == 0 {
		return "none that Go knows"
	}
	return strings.Join(pki.ExtKeyUsageNames(usages), ", ")
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// outOfValidity says how now falls outside cert's validity, naming the
// certificate and both ends of its window, or returns "" when it does not.
func outOfValidity(cert *x509.Certificate, now time.Time) string {
	var state string
	switch {
	case now.After(cert.NotAfter):
		state = "has expired"
	case now.Before(cert.NotBefore):
		state = "is not yet valid"
	default:
		return ""
	}
	return fmt.Sprintf("%q %s: valid %s to %s, and this machine's clock says %s",
		cert.Subject.String(), state, stamp(cert.NotBefore), stamp(cert.NotAfter), stamp(now))
}
