package pki

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// OutlivesCAError is [IssueFiles] or [Init] refusing a certificate whose
// validity would end after that of the CA that signs it. Verifiers judge every
// certificate of a chain by the same clock, so such a certificate stops
// working when its CA expires whatever its own dates say.
type OutlivesCAError struct {
	// NotAfter is when the certificate asked for would have expired.
	NotAfter time.Time
	// CA is the certificate of the CA that would have signed it, or of the
	// CA above it that expires first.
	CA *x509.Certificate
}

func (e *OutlivesCAError) Error() string {
	return fmt.Sprintf("pki: the certificate would be valid until %s, after its CA %q, which ends at %s: "+
		"a certificate stops working when its CA does", e.NotAfter.UTC().Format(time.RFC3339),
		e.CA.Subject.String(), e.CA.NotAfter.UTC().Format(time.RFC3339))
}

// checkWithinCA refuses a validity that ends after the signer's, or after
// that of a CA in its chain.
func checkWithinCA(signer *Authority, notAfter time.Time) error {
	for _, ca := range append([]*x509.Certificate{signer.Certificate}, signer.Chain...) {
		if ca.IsCA && notAfter.After(ca.NotAfter) {
			return &OutlivesCAError{NotAfter: notAfter, CA: ca}
		}
	}
	return nil
}

// ReissueCommand is the echoloop command that replaces the certificate
// read from file with a new one for the same use, names and key type,
// signed by the CA of file's directory: the fix to print for a certificate
// that has expired. A server certificate keeps its file name; a client
// certificate keeps its common name, which `pki issue client` also uses as
// the file name, so the command says where it writes when that differs.
func ReissueCommand(file string, cert *x509.Certificate) string {
	dir := filepath.Dir(file)
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	usage, name := ClientUsage, cert.Subject.CommonName
	if slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		usage, name = ServerUsage, base
	}
	if !fileNamePattern.MatchString(name) {
		name = base
	}

	args := []string{"echoloop pki issue", string(usage), name, "--certs", dir}
	for _, san := range SANs(cert) {
		args = append(args, "--san", san)
	}
	if kt := KeyTypeOf(cert); kt != "" && kt != KeyECDSAP256 {
		args = append(args, "--key-type", string(kt))
	}
	command := strings.Join(append(args, "--force"), " ")

	written := filepath.Join(dir, name+".crt")
	if written != filepath.Clean(file) {
		command += fmt.Sprintf(" (it writes %s and %s)", written, filepath.Join(dir, name+".key"))
	}
	return command
}

// SANs are a certificate's subject alternative names as --san takes them:
// DNS names, IP addresses, URIs, then e-mail addresses.
func SANs(cert *x509.Certificate) []string {
	values := append([]string{}, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		values = append(values, ip.String())
	}
	for _, u := range cert.URIs {
		values = append(values, u.String())
	}
	return append(values, cert.EmailAddresses...)
}

// KeyTypeOf is the [KeyType] that generates a key like the certificate's,
// or "" for a key this package does not make.
func KeyTypeOf(cert *x509.Certificate) KeyType {
	// "ECDSA P-256" is ecdsa-p256, "RSA 2048" rsa-2048, "Ed25519" ed25519.
	described := strings.ReplaceAll(DescribeKey(cert.PublicKey), "-", "")
	for _, kt := range KeyTypes() {
		if strings.EqualFold(strings.ReplaceAll(string(kt), "-", " "), described) {
			return kt
		}
	}
	return ""
}
