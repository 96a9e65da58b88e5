// Package pki makes and reads the certificates that mutual TLS needs: a
// certificate authority, server and client leaves signed by it, and the PEM
// files they live in.
//
// It is built for development and tests: [NewAuthority] and [Authority.Issue]
// make a throw-away PKI in memory in a few milliseconds, and [Init] writes the
// files that `echoloop serve` and `echoloop call` read. Keys are written
// unencrypted. For production, issue certificates from a real CA
// (cert-manager, SPIFFE/SPIRE, step-ca); the loaders here read those too.
//
// The package logs nothing; every error it returns starts with "pki: ".
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"net/url"
	"strings"
	"time"
)

// KeyType names the algorithm and size of a generated key.
type KeyType string

// The key types the package can generate. [KeyECDSAP256] is the default: it is
// what browsers, curl and gRPC stacks all accept, and its handshakes are among
// the cheapest.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyEd25519   KeyType = "ed25519"
	KeyRSA2048   KeyType = "rsa-2048"
	KeyRSA3072   KeyType = "rsa-3072"
	KeyRSA4096   KeyType = "rsa-4096"
)

// KeyTypes lists every [KeyType] in the order the help text shows them.
func KeyTypes() []KeyType {
	return []KeyType{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA2048, KeyRSA3072, KeyRSA4096}
}

// GenerateKey makes a new private key of the given type.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyEd25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("pki: unknown key type %q (want one of %s)", kt, joinKeyTypes())
}

func joinKeyTypes() string {
	names := make([]string, 0, len(KeyTypes()))
	for _, kt := range KeyTypes() {
		names = append(names, string(kt))
	}
	return strings.Join(names, ", ")
}

// Backdate is how far before "now" a new certificate's validity starts. A
// peer whose clock runs a few minutes behind the issuer's would otherwise
// refuse a certificate issued a moment ago as "not yet valid".
const Backdate = 5 * time.Minute

// Default validity periods. A development CA outlives the leaves it signs so
// that re-issuing a leaf never forces a new trust anchor on every client.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity = 825 * 24 * time.Hour // the longest validity Apple platforms accept for TLS leaves
)

// Option changes how [NewAuthority] or [Authority.Issue] builds a certificate.
type Option interface {
	apply(*certOptions)
}

type optionFunc func(*certOptions)

func (f optionFunc) apply(o *certOptions) { f(o) }

type certOptions struct {
	keyType   KeyType
	key       crypto.Signer
	notBefore time.Time
	notAfter  time.Time
	validFor  time.Duration
	issuedAt  time.Time
	usages    []x509.ExtKeyUsage
	sans      []string
	subject   pkix.Name
}

// WithKeyType sets the type of the generated key. Default [KeyECDSAP256].
func WithKeyType(kt KeyType) Option {
	return optionFunc(func(o *certOptions) { o.keyType = kt })
}

// WithKey uses an existing key instead of generating one.
func WithKey(key crypto.Signer) Option {
	return optionFunc(func(o *certOptions) { o.key = key })
}

// WithValidFor makes the certificate valid from [Backdate] ago until d from
// now. Defaults: [DefaultCAValidity] for authorities, [DefaultLeafValidity] for leaves.
func WithValidFor(d time.Duration) Option {
	return optionFunc(func(o *certOptions) { o.validFor = d })
}

// WithIssuedAt issues the certificate as if the clock read t: the validity
// starts [Backdate] before t. Tests use it to stand in for an issuer whose
// clock differs from the verifier's.
func WithIssuedAt(t time.Time) Option {
	return optionFunc(func(o *certOptions) { o.issuedAt = t })
}

// WithValidity sets the exact validity window. Tests use it to make expired
// and not-yet-valid certificates; it overrides [WithValidFor].
func WithValidity(notBefore, notAfter time.Time) Option {
	return optionFunc(func(o *certOptions) { o.notBefore, o.notAfter = notBefore, notAfter })
}

// WithUsage sets the extended key usages of a leaf, replacing the default of
// the issuing call. With no arguments the certificate carries no EKU
// extension at all, which verifiers read as "any purpose".
func WithUsage(usages ...x509.ExtKeyUsage) Option {
	return optionFunc(func(o *certOptions) { o.usages = append([]x509.ExtKeyUsage{}, usages...) })
}

// WithSANs adds subject alternative names. Each value's kind is read from
// its form: an IP address, a URI with a scheme (spiffe://, https://), an
// e-mail address (has an @), otherwise a DNS name.
func WithSANs(values ...string) Option {
	return optionFunc(func(o *certOptions) { o.sans = append(o.sans, values...) })
}

// IsURISAN reports whether [WithSANs] reads value as a URI: it has a scheme
// followed by "://", or is a URN.
func IsURISAN(value string) bool { return sanKind(value) == "uri" }

// WithOrganizationalUnit sets the subject's organisational units.
func WithOrganizationalUnit(units ...string) Option {
	return optionFunc(func(o *certOptions) { o.subject.OrganizationalUnit = units })
}

// Authority is a certificate authority held in memory: its certificate and
// the key that signs with it.
type Authority struct {
	// Certificate is the authority's own certificate.
	Certificate *x509.Certificate
	// Key is the authority's private key.
	Key crypto.Signer
	// Chain holds, for an intermediate, its own certificate and those of
	// any intermediates above it, nearest first, without the root. It is
	// empty for a root. Leaves issued here carry it after themselves.
	Chain []*x509.Certificate
}

// NewAuthority makes a self-signed root CA named commonName. Options that
// apply: [WithKeyType], [WithKey], [WithValidFor], [WithValidity].
//
// The CA carries no extended key usage: RFC 5280 does not define EKU for CA
// certificates, and Go's verifier, like others, would then limit every leaf
// below it to the usages listed.
func NewAuthority(commonName string, opts ...Option) (*Authority, error) {
	_, key, template, err := prepare(commonName, DefaultCAValidity, nil, opts)
	if err != nil {
		return nil, err
	}
	template.IsCA = true
	template.BasicConstraintsValid = true
	template.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	template.ExtKeyUsage = nil

	cert, err := sign(template, template, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing CA %q: %w", commonName, err)
	}
	return &Authority{Certificate: cert, Key: key}, nil
}

// Issued is a leaf certificate with its private key.
type Issued struct {
	// Certificate is the leaf.
	Certificate *x509.Certificate
	// Key is the leaf's private key.
	Key crypto.Signer
	// Chain holds the intermediates between the leaf and the root, nearest
	// first; empty when a root signed the leaf.
	Chain []*x509.Certificate
}

// IssueServer signs a server certificate (serverAuth) for the given names.
// The first DNS name, if any, also becomes the common name.
func (a *Authority) IssueServer(names []string, opts ...Option) (*Issued, error) {
	commonName := ""
	for _, n := range names {
		if sanKind(n) == "dns" {
			commonName = n
			break
		}
	}
	base := []Option{WithSANs(names...)}
	return a.Issue(commonName, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, append(base, opts...)...)
}

// IssueClient signs a client certificate (clientAuth) with the given common name.
func (a *Authority) IssueClient(commonName string, opts ...Option) (*Issued, error) {
	return a.Issue(commonName, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, opts...)
}

// Issue signs a leaf certificate named commonName with the given default
// extended key usages; [WithUsage] replaces them.
func (a *Authority) Issue(
	commonName string,
	usages []x509.ExtKeyUsage,
	opts ...Option,
) (*Issued, error) {
	o, key, template, err := prepare(commonName, DefaultLeafValidity, usages, opts)
	if err != nil {
		return nil, err
	}
	template.ExtKeyUsage = o.usages
	template.KeyUsage = x509.KeyUsageDigitalSignature
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		// RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key.
		template.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if err := addSANs(template, o.sans); err != nil {
		return nil, err
	}

	cert, err := sign(template, a.Certificate, key.Public(), a.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing certificate %q: %w", commonName, err)
	}
	return &Issued{Certificate: cert, Key: key, Chain: append([]*x509.Certificate{}, a.Chain...)}, nil
}

// NewIntermediate makes a CA named commonName signed by a. Options that
// apply: [WithKeyType], [WithKey], [WithValidFor], [WithValidity],
// [WithIssuedAt], and [WithUsage], which puts an extended key usage list on
// the intermediate and so limits what the leaves below it may be used for.
func (a *Authority) NewIntermediate(commonName string, opts ...Option) (*Authority, error) {
	o, key, template, err := prepare(commonName, DefaultCAValidity, nil, opts)
	if err != nil {
		return nil, err
	}
	template.IsCA = true
	template.BasicConstraintsValid = true
	template.MaxPathLenZero = true // signs leaves only
	template.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	template.ExtKeyUsage = o.usages

	cert, err := sign(template, a.Certificate, key.Public(), a.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing intermediate %q: %w", commonName, err)
	}
	chain := append([]*x509.Certificate{cert}, a.Chain...)
	return &Authority{Certificate: cert, Key: key, Chain: chain}, nil
}

// NewSelfSigned makes a leaf certificate that signs itself: no CA vouches
// for it. Tests use it to check that a server refuses exactly that.
func NewSelfSigned(commonName string, usages []x509.ExtKeyUsage, opts ...Option) (*Issued, error) {
	o, key, template, err := prepare(commonName, DefaultLeafValidity, usages, opts)
	if err != nil {
		return nil, err
	}
	template.ExtKeyUsage = o.usages
	template.KeyUsage = x509.KeyUsageDigitalSignature
	if err := addSANs(template, o.sans); err != nil {
		return nil, err
	}
	cert, err := sign(template, template, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing self-signed %q: %w", commonName, err)
	}
	return &Issued{Certificate: cert, Key: key}, nil
}

// TLSCertificate returns the leaf, its chain and its key as a
// [tls.Certificate] ready for a tls.Config.
func (i *Issued) TLSCertificate() tls.Certificate {
	cert := tls.Certificate{
		Certificate: [][]byte{i.Certificate.Raw},
		PrivateKey:  i.Key,
		Leaf:        i.Certificate,
	}
	for _, c := range i.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// LeafOnly returns the leaf without its chain, as a client that forgot its
// intermediates would present it.
func (i *Issued) LeafOnly() *Issued {
	return &Issued{Certificate: i.Certificate, Key: i.Key}
}

// CertificatePEM returns the leaf and then its chain as PEM blocks, the
// order TLS servers and clients expect in a certificate file.
func (i *Issued) CertificatePEM() []byte {
	return EncodeCertificates(append([]*x509.Certificate{i.Certificate}, i.Chain...)...)
}

// KeyPEM returns the private key as a PKCS #8 PEM block.
func (i *Issued) KeyPEM() ([]byte, error) {
	return EncodeKey(i.Key)
}

// CertificatePEM returns the authority's certificate as a PEM block.
func (a *Authority) CertificatePEM() []byte {
	return EncodeCertificates(a.Certificate)
}

// Pool returns a pool holding only this authority, for RootCAs or ClientCAs.
func (a *Authority) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(a.Certificate)
	return pool
}

// EncodeCertificates returns the certificates as consecutive PEM blocks.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// EncodeKey returns key as an unencrypted PKCS #8 "PRIVATE KEY" PEM block,
// the form every TLS stack reads for every key type.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Fingerprint returns the SHA-256 of the certificate's DER encoding in
// lower-case hex without colons, as echoloop shows it everywhere.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// SerialHex returns the certificate's serial number in lower-case hex.
func SerialHex(cert *x509.Certificate) string {
	if cert.SerialNumber == nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// prepare resolves the options and makes the key and the certificate
// template every kind of certificate starts from.
func prepare(
	commonName string,
	validFor time.Duration,
	usages []x509.ExtKeyUsage,
	opts []Option,
) (*certOptions, crypto.Signer, *x509.Certificate, error) {
	o := resolve(validFor, usages, opts)
	if err := o.validate(); err != nil {
		return nil, nil, nil, err
	}
	key, err := o.signer()
	if err != nil {
		return nil, nil, nil, err
	}
	template, err := newTemplate(commonName, o)
	if err != nil {
		return nil, nil, nil, err
	}
	return o, key, template, nil
}

func resolve(validFor time.Duration, usages []x509.ExtKeyUsage, opts []Option) *certOptions {
	o := &certOptions{keyType: KeyECDSAP256, validFor: validFor, usages: usages}
	for _, opt := range opts {
		opt.apply(o)
	}
	if o.notBefore.IsZero() && o.notAfter.IsZero() {
		now := o.issuedAt
		if now.IsZero() {
			now = time.Now()
		}
		o.notBefore = now.Add(-Backdate)
		o.notAfter = now.Add(o.validFor)
	}
	return o
}

func (o *certOptions) validate() error {
	if !o.notAfter.After(o.notBefore) {
		return fmt.Errorf("pki: validity ends (%s) before it starts (%s)",
			o.notAfter.Format(time.RFC3339), o.notBefore.Format(time.RFC3339))
	}
	for _, san := range o.sans {
		if strings.TrimSpace(san) == "" {
			return errors.New("pki: empty subject alternative name")
		}
	}
	return nil
}

func (o *certOptions) signer() (crypto.Signer, error) {
	if o.key != nil {
		return o.key, nil
	}
	key, err := GenerateKey(o.keyType)
	if err != nil {
		return nil, err
	}
	return key, nil
}

func newTemplate(commonName string, o *certOptions) (*x509.Certificate, error) {
	// RFC 5280 section 4.1.2.2 allows up to 20 octets; 128 random bits are
	// unique with overwhelming probability and always positive.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: generating serial number: %w", err)
	}
	subject := o.subject
	subject.CommonName = commonName
	subject.Organization = []string{"echoloop development"}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    o.notBefore.UTC(),
		NotAfter:     o.notAfter.UTC(),
	}, nil
}

func sign(
	template, parent *x509.Certificate,
	pub crypto.PublicKey,
	key crypto.Signer,
) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, template, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func sanKind(value string) string {
	switch {
	case net.ParseIP(strings.Trim(value, "[]")) != nil:
		return "ip"
	case strings.Contains(value, "://"), strings.HasPrefix(strings.ToLower(value), "urn:"):
		return "uri"
	case strings.Contains(value, "@"):
		return "email"
	}
	return "dns"
}

// checkDNSName refuses values that cannot be a DNS name, which would
// otherwise end up in a certificate no client can match.
func checkDNSName(value string) error {
	if strings.Trim(value, "0123456789.") == "" {
		return fmt.Errorf("pki: subject alternative name %q looks like an IPv4 address but is not one", value)
	}
	if strings.ContainsAny(value, ":/%[] \t") {
		return fmt.Errorf("pki: subject alternative name %q is not a DNS name, IP address, "+
			"URI (scheme://...) or e-mail address: give a host name without port or path", value)
	}
	return nil
}

func addSANs(template *x509.Certificate, sans []string) error {
	for _, san := range sans {
		switch sanKind(san) {
		case "ip":
			template.IPAddresses = append(template.IPAddresses, net.ParseIP(strings.Trim(san, "[]")))
		case "uri":
			u, err := url.Parse(san)
			if err != nil {
				return fmt.Errorf("pki: subject alternative name %q is not a valid URI: %w", san, err)
			}
			template.URIs = append(template.URIs, u)
		case "email":
			addr, err := mail.ParseAddress(san)
			if err != nil {
				return fmt.Errorf("pki: subject alternative name %q is not a valid e-mail address: %w", san, err)
			}
			template.EmailAddresses = append(template.EmailAddresses, addr.Address)
		default:
			if err := checkDNSName(san); err != nil {
				return err
			}
			template.DNSNames = append(template.DNSNames, san)
		}
	}
	return nil
}

// AsIssued returns the authority's own certificate and key in the shape of
// a leaf, for tests that present a CA certificate where a client
// certificate belongs.
func (a *Authority) AsIssued() *Issued {
	var chain []*x509.Certificate
	if len(a.Chain) > 1 {
		chain = append(chain, a.Chain[1:]...)
	}
	return &Issued{Certificate: a.Certificate, Key: a.Key, Chain: chain}
}

// DescribeKey names a public key's algorithm and size, for example
// "ECDSA P-256", "RSA 2048" or "Ed25519".
func DescribeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
