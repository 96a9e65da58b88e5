package pki

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Inspection is what `echoloop pki inspect` shows of one certificate: one
// field per row of its output, under the JSON names `--json` prints.
type Inspection struct {
	File           string    `json:"file"`
	Index          int       `json:"index"` // position in the file, from 1
	Subject        string    `json:"subject"`
	Issuer         string    `json:"issuer"`
	SerialNumber   string    `json:"serialNumber"`
	SHA256         string    `json:"sha256Fingerprint"`
	NotBefore      time.Time `json:"notBefore"`
	NotAfter       time.Time `json:"notAfter"`
	TimeLeft       string    `json:"timeLeft"`
	Expired        bool      `json:"expired"`
	NotYetValid    bool      `json:"notYetValid"`
	DNSNames       []string  `json:"dnsNames"`
	IPAddresses    []string  `json:"ipAddresses"`
	URIs           []string  `json:"uris"`
	EmailAddresses []string  `json:"emailAddresses"`
	IsCA           bool      `json:"isCA"`
	Key            string    `json:"key"` // for example "ECDSA P-256"
	KeyUsage       []string  `json:"keyUsage"`
	ExtKeyUsage    []string  `json:"extKeyUsage"`
	// ChainsTo is the CA file the certificate was verified against, and
	// Chains whether it verified; ChainError says why not.
	ChainsTo   string `json:"chainsTo,omitempty"`
	Chains     bool   `json:"chains"`
	ChainError string `json:"chainError,omitempty"`
}

// Inspect describes a certificate as of now.
func Inspect(cert *x509.Certificate, now time.Time) Inspection {
	in := Inspection{
		Subject:        cert.Subject.String(),
		Issuer:         cert.Issuer.String(),
		SerialNumber:   SerialHex(cert),
		SHA256:         Fingerprint(cert),
		NotBefore:      cert.NotBefore.UTC(),
		NotAfter:       cert.NotAfter.UTC(),
		DNSNames:       append([]string{}, cert.DNSNames...),
		EmailAddresses: append([]string{}, cert.EmailAddresses...),
		IPAddresses:    []string{},
		URIs:           []string{},
		IsCA:           cert.IsCA,
		Key:            DescribeKey(cert.PublicKey),
		KeyUsage:       keyUsageNames(cert.KeyUsage),
		ExtKeyUsage:    ExtKeyUsageNames(cert.ExtKeyUsage),
		Expired:        now.After(cert.NotAfter),
		NotYetValid:    now.Before(cert.NotBefore),
	}
	for _, ip := range cert.IPAddresses {
		in.IPAddresses = append(in.IPAddresses, ip.String())
	}
	for _, u := range cert.URIs {
		in.URIs = append(in.URIs, u.String())
	}
	switch {
	case in.Expired:
		in.TimeLeft = "expired " + roughly(now.Sub(cert.NotAfter)) + " ago"
	case in.NotYetValid:
		in.TimeLeft = "valid in " + roughly(cert.NotBefore.Sub(now))
	default:
		in.TimeLeft = roughly(cert.NotAfter.Sub(now)) + " left"
	}
	return in
}

// CheckChain verifies the certificate against the CAs in roots, with the
// intermediates given, for any purpose, and records the outcome.
func (in *Inspection) CheckChain(cert *x509.Certificate, intermediates []*x509.Certificate,
	roots *x509.CertPool, caFile string) {
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	in.ChainsTo = caFile
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: pool,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	in.Chains = err == nil
	if err != nil {
		in.ChainError = err.Error()
	}
}

// roughly prints a duration in the largest unit that keeps it readable.
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	}
	return d.Round(time.Second).String()
}

// keyUsageNames spells the key usage bits as RFC 5280 names them.
func keyUsageNames(usage x509.KeyUsage) []string {
	names := []struct {
		bit  x509.KeyUsage
		name string
	}{
		{x509.KeyUsageDigitalSignature, "digitalSignature"},
		{x509.KeyUsageContentCommitment, "contentCommitment"},
		{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
		{x509.KeyUsageDataEncipherment, "dataEncipherment"},
		{x509.KeyUsageKeyAgreement, "keyAgreement"},
		{x509.KeyUsageCertSign, "keyCertSign"},
		{x509.KeyUsageCRLSign, "cRLSign"},
		{x509.KeyUsageEncipherOnly, "encipherOnly"},
		{x509.KeyUsageDecipherOnly, "decipherOnly"},
	}
	out := []string{}
	for _, n := range names {
		if usage&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// ExtKeyUsageNames spells extended key usages as RFC 5280 names them
// (serverAuth, clientAuth, ...).
func ExtKeyUsageNames(usages []x509.ExtKeyUsage) []string {
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny:             "any",
		x509.ExtKeyUsageServerAuth:      "serverAuth",
		x509.ExtKeyUsageClientAuth:      "clientAuth",
		x509.ExtKeyUsageCodeSigning:     "codeSigning",
		x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping:    "timeStamping",
		x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
	}
	out := []string{}
	for _, u := range usages {
		if n, ok := names[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("usage(%d)", u))
		}
	}
	return out
}

// CRLInspection is what `echoloop pki inspect` shows of one revocation
// list, under the JSON names `--json` prints. The fields that say whether
// it chains keep the names [Inspection] gives them.
type CRLInspection struct {
	File       string    `json:"file"`
	Index      int       `json:"index"` // position among the file's lists, from 1
	Kind       string    `json:"kind"`  // always "crl"
	Issuer     string    `json:"issuer"`
	Number     string    `json:"number"`
	ThisUpdate time.Time `json:"thisUpdate"`
	// NextUpdate is when the issuer promised a newer list; zero when the
	// list names no such time.
	NextUpdate time.Time `json:"nextUpdate"`
	// Stale is whether NextUpdate has passed. Verifiers that insist on a
	// current list refuse every client checked against it.
	Stale bool `json:"stale"`
	// TimeLeft is how long until NextUpdate, or how long past it.
	TimeLeft string   `json:"timeLeft,omitempty"`
	Revoked  []string `json:"revokedSerials"`
	// ChainsTo is the CA file the signature was checked against, and
	// Chains whether a CA in it, or an intermediate it signed, signed the
	// list; SignedBy names that signer, ChainError says why none did.
	ChainsTo   string `json:"chainsTo,omitempty"`
	Chains     bool   `json:"chains"`
	SignedBy   string `json:"signedBy,omitempty"`
	ChainError string `json:"chainError,omitempty"`
}

// InspectCRL describes a revocation list as of now.
func InspectCRL(crl *x509.RevocationList, now time.Time) CRLInspection {
	in := CRLInspection{
		Kind:       "crl",
		Issuer:     crl.Issuer.String(),
		ThisUpdate: crl.ThisUpdate.UTC(),
		Revoked:    []string{},
	}
	if !crl.NextUpdate.IsZero() {
		in.NextUpdate = crl.NextUpdate.UTC()
		in.Stale = now.After(crl.NextUpdate)
		in.TimeLeft = roughly(crl.NextUpdate.Sub(now)) + " left"
		if in.Stale {
			in.TimeLeft = "stale for " + roughly(now.Sub(crl.NextUpdate))
		}
	}
	if crl.Number != nil {
		in.Number = crl.Number.String()
	}
	for _, e := range crl.RevokedCertificateEntries {
		in.Revoked = append(in.Revoked, e.SerialNumber.Text(16))
	}
	return in
}

// CheckSignature checks that one of roots, the CAs of caFile, signed the
// list, or else an intermediate among carried (the certificates of the
// list's own file, then any others known) that chains to them, and records
// the outcome. An intermediate that signed the list but does not chain is
// named in ChainError, since that is the likeliest mix-up: a list from
// another PKI's intermediate.
func (in *CRLInspection) CheckSignature(
	crl *x509.RevocationList,
	carried []*x509.Certificate,
	roots []*x509.Certificate,
	caFile string,
) {
	in.ChainsTo = caFile
	for _, root := range roots {
		if crl.CheckSignatureFrom(root) == nil {
			in.Chains, in.SignedBy = true, root.Subject.String()
			return
		}
	}

	rootPool := x509.NewCertPool()
	for _, root := range roots {
		rootPool.AddCert(root)
	}
	others := x509.NewCertPool()
	for _, c := range carried {
		others.AddCert(c)
	}
	var unchained error
	for _, c := range carried {
		if crl.CheckSignatureFrom(c) != nil {
			continue
		}
		_, err := c.Verify(x509.VerifyOptions{
			Roots:         rootPool,
			Intermediates: others,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err == nil {
			in.Chains, in.SignedBy = true, c.Subject.String()
			return
		}
		if unchained == nil {
			unchained = fmt.Errorf("signed by %s, which does not chain to %s: %w", c.Subject, caFile, err)
		}
	}
	if unchained != nil {
		in.ChainError = unchained.Error()
		return
	}
	in.ChainError = fmt.Sprintf("signed by none of the CAs in %s, nor by an intermediate "+
		"certificate they signed (the list names %s as its issuer)", caFile, crl.Issuer)
}
