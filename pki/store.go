package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// LoadAuthority reads a CA certificate and its key. chain holds the
// certificates above it up to, not including, the root (empty for a root);
// leaves issued from the result carry cert and chain.
func LoadAuthority(certPath, keyPath string) (*Authority, error) {
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	key, err := LoadKey(keyPath)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %q is not a CA certificate (%s): give the CA's own certificate",
			certPath, cert.Subject)
	}
	if err := checkKeyMatches(cert, key); err != nil {
		return nil, fmt.Errorf("pki: %q and %q do not belong together: %w", certPath, keyPath, err)
	}

	a := &Authority{Certificate: cert, Key: key}
	if !isSelfIssued(cert) {
		// An intermediate: its leaves must carry it, and whatever stands
		// between it and the root if the file holds that too.
		a.Chain = certs
	}
	return a, nil
}

func isSelfIssued(cert *x509.Certificate) bool {
	return string(cert.RawIssuer) == string(cert.RawSubject)
}

// SigningAuthority loads the CA that issues and revokes in a certificates
// directory: the intermediate when `pki init --intermediate` made one, the
// root otherwise. caKeyPath overrides where the root's key is read from,
// for a root key kept away from the directory.
func SigningAuthority(dir, caKeyPath string) (*Authority, error) {
	intermediateCert := filepath.Join(dir, IntermediateCertFile)
	if _, err := os.Stat(intermediateCert); err == nil {
		return LoadAuthority(intermediateCert, filepath.Join(dir, IntermediateKeyFile))
	}
	if caKeyPath == "" {
		caKeyPath = filepath.Join(dir, CAKeyFile)
	}
	a, err := LoadAuthority(filepath.Join(dir, CACertFile), caKeyPath)
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (issuing needs the CA's key: run `echoloop pki init --certs %s` "+
			"first, or give the key's path with --ca-key)", err, dir)
	}
	return a, err
}

// Usage names what a certificate from [IssueFiles] is for.
type Usage string

// The usages [IssueFiles] issues for.
const (
	ServerUsage Usage = "server"
	ClientUsage Usage = "client"
)

// fileNamePattern keeps NAME a plain file name: no directories, no dots
// leading, nothing a shell would have to quote.
var fileNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// IssueFiles signs a certificate for name with the directory's signing
// authority and writes dir/name.crt (leaf, then chain) and dir/name.key.
// A server certificate covers sans, or name itself when sans is empty; a
// client certificate's common name is name and it carries sans as well.
// Existing files are replaced only with force. A validity that would end
// after the signing CA's is refused with an [*OutlivesCAError].
func IssueFiles(
	dir, caKeyPath string,
	usage Usage,
	name string,
	sans []string,
	force bool,
	opts ...Option,
) (*Issued, []string, error) {
	if !fileNamePattern.MatchString(name) {
		return nil, nil, fmt.Errorf("pki: %q cannot name a certificate file: use letters, digits, "+
			"dots, dashes and underscores, starting with a letter or digit", name)
	}
	if name == "ca" || name == "intermediate" {
		return nil, nil, fmt.Errorf("pki: %q is the CA's own file name: choose another name", name)
	}
	signer, err := SigningAuthority(dir, caKeyPath)
	if err != nil {
		return nil, nil, err
	}
	if err := checkWithinCA(signer, resolve(DefaultLeafValidity, nil, opts).notAfter); err != nil {
		return nil, nil, err
	}

	var issued *Issued
	switch usage {
	case ServerUsage:
		if len(sans) == 0 {
			sans = []string{name}
		}
		issued, err = signer.IssueServer(uniqueNames(sans), opts...)
	case ClientUsage:
		issued, err = signer.IssueClient(name, append(opts, WithSANs(uniqueNames(sans)...))...)
	default:
		return nil, nil, fmt.Errorf("pki: unknown usage %q: want server or client", usage)
	}
	if err != nil {
		return nil, nil, err
	}

	set := fileSet{}
	if err := set.issued(filepath.Join(dir, name), issued); err != nil {
		return nil, nil, err
	}
	paths, err := set.write(force)
	if err != nil {
		return nil, nil, err
	}
	return issued, paths, nil
}

// RevocationReasons maps the reason names `pki revoke --reason` takes to
// their RFC 5280 section 5.3.1 codes.
var RevocationReasons = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"caCompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"privilegeWithdrawn":   9,
}

// ReasonNames lists the revocation reasons in a stable order, for help text.
func ReasonNames() []string {
	names := make([]string, 0, len(RevocationReasons))
	for n := range RevocationReasons {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// CRLValidity is how long a CRL from [Revoke] stays current. Verifiers that
// insist on a current list refuse it afterwards, so a long-lived dev server
// needs `pki revoke` (which re-signs the list) to run at least this often.
const CRLValidity = 30 * 24 * time.Hour

// Revoke adds a certificate to the signing authority's revocation list in
// dir (ca.crl), creating the list if needed, and re-signs it with the next
// CRL number. target is a certificate file or a serial number in hex
// (colons allowed). It returns the serial revoked and the CRL's path.
func Revoke(dir, caKeyPath, target, reason string) (*big.Int, string, error) {
	code, ok := RevocationReasons[reason]
	if !ok {
		return nil, "", fmt.Errorf("pki: unknown revocation reason %q: want one of %s",
			reason, strings.Join(ReasonNames(), ", "))
	}
	signer, err := SigningAuthority(dir, caKeyPath)
	if err != nil {
		return nil, "", err
	}
	serial, err := revocationTarget(target, signer)
	if err != nil {
		return nil, "", err
	}

	crlPath := filepath.Join(dir, CRLFile)
	var entries []x509.RevocationListEntry
	number := big.NewInt(1)
	if previous, err := LoadCRLs(crlPath); err == nil {
		for _, crl := range previous {
			if crl.CheckSignatureFrom(signer.Certificate) != nil {
				continue // another issuer's list; this one replaces the file
			}
			entries = crl.RevokedCertificateEntries
			if crl.Number != nil {
				number = new(big.Int).Add(crl.Number, big.NewInt(1))
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	for _, e := range entries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return nil, "", fmt.Errorf("pki: serial %s is already revoked in %s", serial.Text(16), crlPath)
		}
	}

	entries = append(entries, x509.RevocationListEntry{
		SerialNumber:   serial,
		RevocationTime: time.Now().UTC(),
		ReasonCode:     code,
	})
	data, err := signer.RevocationList(number, entries)
	if err != nil {
		return nil, "", err
	}
	if err := WriteFile(crlPath, data, CertFileMode); err != nil {
		return nil, "", err
	}
	return serial, crlPath, nil
}

// RevocationList signs a CRL with the given number and entries, current
// from now for [CRLValidity], and returns it as PEM. An intermediate's list
// is followed by the intermediate's certificate chain (without the root):
// a server that trusts only the root can then tell that the list applies
// to the clients below it. Readers of CRLs skip the certificates.
func (signer *Authority) RevocationList(
	number *big.Int,
	entries []x509.RevocationListEntry,
) ([]byte, error) {
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now.Add(-Backdate).UTC(),
		NextUpdate:                now.Add(CRLValidity).UTC(),
		RevokedCertificateEntries: entries,
	}, signer.Certificate, signer.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing the revocation list: %w", err)
	}
	list := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	return append(list, EncodeCertificates(signer.Chain...)...), nil
}

// revocationTarget reads the serial to revoke from a certificate file, or
// from the argument itself as hex.
func revocationTarget(target string, signer *Authority) (*big.Int, error) {
	_, statErr := os.Stat(target)
	switch {
	case statErr == nil:
		return revocationTargetFile(target, signer)
	case looksLikePath(target) && errors.Is(statErr, fs.ErrNotExist):
		return nil, fmt.Errorf("pki: there is no file %q to revoke: give the path of the certificate "+
			"file, or its serial number in hex", target)
	case looksLikePath(target):
		return nil, fmt.Errorf("pki: reading %q: %w", target, statErr)
	}
	hexSerial := strings.ToLower(strings.ReplaceAll(target, ":", ""))
	serial, ok := new(big.Int).SetString(hexSerial, 16)
	if !ok || serial.Sign() <= 0 {
		return nil, fmt.Errorf("pki: %q is neither a certificate file nor a serial number in hex", target)
	}
	if serial.Cmp(signer.Certificate.SerialNumber) == 0 {
		return nil, errRevokeSelf(target, signer)
	}
	return serial, nil
}

// looksLikePath tells a file name from a serial number, which has neither
// a directory nor a certificate file's suffix.
func looksLikePath(target string) bool {
	if strings.ContainsRune(target, '/') || strings.ContainsRune(target, filepath.Separator) {
		return true
	}
	switch strings.ToLower(filepath.Ext(target)) {
	case ".crt", ".pem", ".cer", ".der":
		return true
	}
	return false
}

// errRevokeSelf refuses to list the signing CA in its own revocation list:
// verifiers look a CA up in the list of the CA above it, so the entry
// would revoke nothing and only confuse whoever reads the list.
func errRevokeSelf(target string, signer *Authority) error {
	fix := "to stop trusting it, remove it from the servers' --cacert bundle, or make a new PKI " +
		"with echoloop pki init --force"
	if !isSelfIssued(signer.Certificate) {
		fix = fmt.Sprintf("an intermediate is revoked in the list of the CA above it (%s), or "+
			"replaced with a new PKI (echoloop pki init --force)", signer.Certificate.Issuer)
	}
	return fmt.Errorf("pki: %q is the certificate of the CA that signs this revocation list (%s): "+
		"a CA cannot revoke itself in its own list; %s", target, signer.Certificate.Subject, fix)
}

// revocationTargetFile reads the serial to revoke from a certificate file,
// which the signing CA must have issued.
func revocationTargetFile(target string, signer *Authority) (*big.Int, error) {
	certs, err := LoadCertificates(target)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if leaf.Equal(signer.Certificate) {
		return nil, errRevokeSelf(target, signer)
	}
	if string(leaf.RawIssuer) != string(signer.Certificate.RawSubject) {
		return nil, fmt.Errorf("pki: %q was issued by %s, not by %s, which keeps this revocation list",
			target, leaf.Issuer, signer.Certificate.Subject)
	}
	// Names are not unique: another CA may carry the same one. Only the
	// signature tells whether this CA issued the certificate, and a
	// serial listed for a certificate it did not issue revokes nothing.
	if err := leaf.CheckSignatureFrom(signer.Certificate); err != nil {
		return nil, fmt.Errorf("pki: %q was not issued by this directory's CA: another CA named %s "+
			"signed it (%v)", target, leaf.Issuer, err)
	}
	return leaf.SerialNumber, nil
}

// LoadCRLs reads every "X509 CRL" PEM block in a file. Blocks of other
// types are skipped, but not one that is cut short or does not decode.
func LoadCRLs(path string) ([]*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: reading revocation list: %w%s", err, directoryHint(err))
	}
	return ParseCRLs(path, data)
}

// ParseCRLs is [LoadCRLs] on bytes already read; name is used in messages.
func ParseCRLs(name string, data []byte) ([]*x509.RevocationList, error) {
	crls, _, err := ParseCRLFile(name, data)
	return crls, err
}

// ParseCRLFile reads a revocation list file as [Authority.RevocationList]
// writes it: the lists, and the certificates that follow an intermediate's
// list, each in file order. Blocks of other types are skipped; a file
// without a list is an error.
func ParseCRLFile(name string, data []byte) ([]*x509.RevocationList, []*x509.Certificate, error) {
	var crls []*x509.RevocationList
	var certs []*x509.Certificate
	for _, block := range pemBlocks(data) {
		if block.Block == nil {
			return nil, nil, block.damaged(name)
		}
		switch block.Type {
		case "X509 CRL":
			crl, err := x509.ParseRevocationList(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("pki: revocation list %d in %q does not parse: %w",
					len(crls)+1, name, err)
			}
			crls = append(crls, crl)
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("pki: certificate %d in revocation list file %q does not "+
					"parse: %w", len(certs)+1, name, err)
			}
			certs = append(certs, cert)
		}
	}
	if len(crls) == 0 {
		if looksLikeDER(data) {
			if crl, err := x509.ParseRevocationList(data); err == nil {
				return []*x509.RevocationList{crl}, nil, nil
			}
		}
		return nil, nil, fmt.Errorf("pki: %q holds no revocation list (expected -----BEGIN X509 CRL-----)", name)
	}
	return crls, certs, nil
}
