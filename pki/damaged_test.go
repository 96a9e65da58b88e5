package pki_test

import (
	"bytes"
	"math/big"
	"strconv"
	"testing"

	"github.com/echoloop/echoloop/pki"
)

// TestDamagedPEMBlocks covers files that hold a BEGIN line whose block is
// cut short or does not decode: each loader says so and names the line,
// rather than reporting no PEM at all or quietly dropping the block.
func TestDamagedPEMBlocks(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	leaf, err := ca.IssueClient("damaged")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	crlPEM, err := ca.RevocationList(big.NewInt(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := leaf.CertificatePEM()
	lines := func(data []byte) int { return bytes.Count(data, []byte("\n")) }
	// garble breaks the base64 of the first body line and keeps the END line.
	garble := func(data []byte) []byte {
		out := bytes.Clone(data)
		out[bytes.IndexByte(out, '\n')+1] = '!'
		return out
	}
	parsers := map[string]func(string, []byte) error{
		"certificates": func(name string, data []byte) error { _, err := pki.ParseCertificates(name, data); return err },
		"key":          func(name string, data []byte) error { _, err := pki.ParseKey(name, data); return err },
		"lists":        func(name string, data []byte) error { _, err := pki.ParseCRLs(name, data); return err },
	}

	cases := []struct {
		name   string
		parser string
		data   []byte
		want   []string
	}{
		{"refused/certificate cut short", "certificates", certPEM[:300], []string{
			"incomplete CERTIFICATE block, starting at line 1", "no -----END line", "cut short",
		}},
		{"refused/certificate cut inside its BEGIN line", "certificates", certPEM[:20], []string{
			"incomplete PEM block, starting at line 1",
		}},
		{"refused/certificate with broken base64", "certificates", garble(certPEM), []string{
			"damaged CERTIFICATE block, starting at line 1", "does not decode",
		}},
		{"refused/second certificate of a chain cut short", "certificates",
			append(ca.CertificatePEM(), certPEM[:200]...), []string{
				"incomplete CERTIFICATE block, starting at line " + strconv.Itoa(lines(ca.CertificatePEM())+1),
			}},
		{"refused/damaged block between two good ones", "certificates",
			append(append(ca.CertificatePEM(), garble(certPEM)...), ca.CertificatePEM()...), []string{
				"damaged CERTIFICATE block, starting at line " + strconv.Itoa(lines(ca.CertificatePEM())+1),
			}},
		{"refused/key cut short", "key", keyPEM[:60], []string{
			"incomplete PRIVATE KEY block, starting at line 1",
		}},
		{"refused/key with broken base64", "key", garble(keyPEM), []string{
			"damaged PRIVATE KEY block, starting at line 1",
		}},
		{"refused/list cut short", "lists", crlPEM[:100], []string{
			"incomplete X509 CRL block, starting at line 1",
		}},
		{"refused/list with broken base64", "lists", garble(crlPEM), []string{
			"damaged X509 CRL block, starting at line 1",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := parsers[tc.parser]("input.pem", tc.data)
			wantPKIError(t, err, append([]string{`"input.pem"`}, tc.want...)...)
		})
	}
}
