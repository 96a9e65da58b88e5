package pki_test

// Fuzz targets for the PEM files echoloop reads: certificates, keys and
// revocation lists. Whatever the bytes, parsing must not panic, and a
// refusal must say which file it was and start with the package's prefix,
// since these messages are what a user sees for a bad file. Seeds live in
// testdata/fuzz.

import (
	"strings"
	"testing"

	"github.com/echoloop/echoloop/pki"
)

const fuzzName = "fuzz.pem"

// namesTheFile fails unless err reads like every other pki error about a
// file: the prefix, then the file's name in quotes.
func namesTheFile(t *testing.T, err error) {
	t.Helper()
	if !strings.HasPrefix(err.Error(), "pki: ") || !strings.Contains(err.Error(), `"`+fuzzName+`"`) {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func FuzzParseCertificates(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := pki.ParseCertificates(fuzzName, data)
		if err != nil {
			namesTheFile(t, err)
			return
		}
		if len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
		for i, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatalf("certificate %d is empty", i+1)
			}
			// What the server logs and reports of any certificate it loads.
			_, _ = pki.Fingerprint(c), pki.SerialHex(c)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := pki.ParseKey(fuzzName, data)
		if err != nil {
			namesTheFile(t, err)
			return
		}
		if key == nil || key.Public() == nil {
			t.Fatal("no error and no usable key")
		}
		_ = pki.DescribeKey(key.Public())
	})
}

func FuzzParseCRLs(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		lists, err := pki.ParseCRLs(fuzzName, data)
		if err != nil {
			namesTheFile(t, err)
			return
		}
		if len(lists) == 0 {
			t.Fatal("no error and no revocation list")
		}
		for _, crl := range lists {
			for _, entry := range crl.RevokedCertificateEntries {
				if entry.SerialNumber == nil {
					t.Fatal("a revoked entry without a serial number")
				}
			}
		}
	})
}
