package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// LoadCertificates reads every certificate in a PEM file, in file order.
// Blocks of other types (a key pasted into the same file, EC parameters) are
// skipped; a file with no certificate at all is an error that says what the
// file seems to hold instead, and so is a block that is cut short or does not
// decode, of whatever type, since skipping it would drop a certificate
// without a word.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: reading certificate file: %w%s", err, directoryHint(err))
	}
	return ParseCertificates(path, data)
}

// ParseCertificates is [LoadCertificates] on bytes already read; name is used
// in error messages only.
func ParseCertificates(name string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	var others []string
	for _, block := range pemBlocks(data) {
		if block.Block == nil {
			return nil, block.damaged(name)
		}
		if block.Type != "CERTIFICATE" {
			others = append(others, block.Type)
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: certificate %d in %q does not parse: %w", len(certs)+1, name, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) > 0 {
		return certs, nil
	}

	switch {
	case len(others) > 0:
		return nil, fmt.Errorf("pki: %q holds no certificate, only PEM blocks of type %s: "+
			"is it a key file given where a certificate was expected?", name, strings.Join(others, ", "))
	case len(data) == 0:
		return nil, fmt.Errorf("pki: %q is empty: expected PEM certificates", name)
	case looksLikeDER(data):
		return nil, fmt.Errorf("pki: %q looks like DER, not PEM: convert it with "+
			"`openssl x509 -inform der -in %s -out cert.pem`", name, name)
	}
	return nil, fmt.Errorf("pki: %q holds no PEM certificate (expected a "+
		"-----BEGIN CERTIFICATE----- block)", name)
}

// looksLikeDER reports whether data starts like a DER SEQUENCE with a
// long-form length, which is how every binary certificate or key begins.
// Text starting with the digit 0 (also 0x30) is followed by another
// printable byte, below 0x80.
func looksLikeDER(data []byte) bool {
	return len(data) > 1 && data[0] == 0x30 && data[1] >= 0x81 && data[1] <= 0x84
}

// directoryHint says what to do when a directory was given for a file.
func directoryHint(err error) string {
	if errors.Is(err, syscall.EISDIR) {
		return " (a file is expected here; --certs is the flag that takes a directory)"
	}
	return ""
}

// LoadCertPool reads a PEM bundle of one or more CA certificates into a pool.
// It returns the certificates too, so callers can name them in messages.
func LoadCertPool(path string) (*x509.CertPool, []*x509.Certificate, error) {
	certs, err := LoadCertificates(path)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}

// LoadKey reads a private key from a PEM file in any of the usual encodings:
// PKCS #8 ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1
// ("EC PRIVATE KEY"). Encrypted keys are refused with the command that
// decrypts them, since a server cannot prompt for a passphrase. A block that
// is cut short or does not decode is refused with its line.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: reading key file: %w%s", err, directoryHint(err))
	}
	return ParseKey(path, data)
}

// ParseKey is [LoadKey] on bytes already read; name is used in error messages only.
func ParseKey(name string, data []byte) (crypto.Signer, error) {
	var seen []string
	for _, block := range pemBlocks(data) {
		if block.Block == nil {
			return nil, block.damaged(name)
		}
		seen = append(seen, block.Type)

		if block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, fmt.Errorf("pki: %q is an encrypted private key; echoloop reads "+
				"unencrypted keys only: decrypt it with `openssl pkey -in %s -out key.pem` "+
				"and keep the result readable by its owner only (chmod 600)", name, name)
		}

		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, keyParseError(name, block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("pki: %q holds a %T key, which cannot sign", name, key)
		}
		return signer, nil
	}

	if len(seen) > 0 {
		return nil, fmt.Errorf("pki: %q holds no private key, only PEM blocks of type %s: "+
			"is it a certificate given where a key was expected?", name, strings.Join(seen, ", "))
	}
	if looksLikeDER(data) {
		return nil, fmt.Errorf("pki: %q looks like a DER key, not PEM: convert it with "+
			"`openssl pkey -inform der -in %s -out key.pem`", name, name)
	}
	return nil, fmt.Errorf("pki: %q holds no PEM private key", name)
}

func keyParseError(name, blockType string, err error) error {
	// Go reads named curves only. OpenSSL writes explicit parameters when
	// asked with -param_enc explicit, and some old tools did so by default.
	if blockType == "EC PRIVATE KEY" || strings.Contains(err.Error(), "curve") {
		// `openssl pkey` alone keeps the explicit parameters; `openssl ec
		// -param_enc named_curve` replaces them, in OpenSSL 1.1, 3 and LibreSSL.
		return fmt.Errorf("pki: %q: %s does not parse (%w); if it uses explicit curve "+
			"parameters, rewrite it with a named curve: "+
			"`openssl ec -in %s -param_enc named_curve -out key.pem`", name, blockType, err, name)
	}
	return fmt.Errorf("pki: %q: %s does not parse: %w", name, blockType, err)
}

// LoadKeyPair reads a certificate chain (leaf first, then any intermediates)
// and its private key, and checks that the key belongs to the leaf.
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := LoadKey(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := checkKeyMatches(certs[0], key); err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %q and %q do not belong together: %w", certPath, keyPath, err)
	}

	pair := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	return pair, nil
}

// CheckKeyMatches reports an error unless key is the private half of the
// certificate's public key.
func CheckKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	if err := checkKeyMatches(cert, key); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// checkKeyMatches is [CheckKeyMatches] without the "pki: " prefix, for
// callers that wrap its error in a message of their own.
func checkKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return fmt.Errorf("the certificate's public key (%T) cannot be compared", cert.PublicKey)
	}
	if !pub.Equal(key.Public()) {
		return errors.New("the private key does not match the certificate's public key")
	}
	return nil
}
