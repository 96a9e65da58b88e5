package server_test

import (
	"crypto/tls"
	"testing"

	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// TestTLS12OffersOnlyAEADSuites dials a server that allows TLS 1.2 with one
// suite at a time: the forward-secret AEAD ones complete the handshake, the
// CBC ones that Go would otherwise offer are refused.
func TestTLS12OffersOnlyAEADSuites(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithMinVersion(tls.VersionTLS12))

	for _, tc := range []struct {
		suite uint16
		ok    bool
	}{
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
		{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false},
	} {
		name := tls.CipherSuiteName(tc.suite)
		conn, err := tls.Dial("tcp", srv.Addr, &tls.Config{
			RootCAs:      srv.CA.Pool(),
			ServerName:   "localhost",
			MinVersion:   tls.VersionTLS12,
			MaxVersion:   tls.VersionTLS12,
			CipherSuites: []uint16{tc.suite}, //nolint:gosec // G402: offering the weak suites is the test
			Certificates: []tls.Certificate{srv.Client.TLSCertificate()},
		})
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: handshake failed: %v", name, err)
		case !tc.ok && err == nil:
			t.Errorf("%s: handshake succeeded, want it refused", name)
		}
		if err == nil {
			if got := conn.ConnectionState().CipherSuite; got != tc.suite {
				t.Errorf("%s: negotiated %s", name, tls.CipherSuiteName(got))
			}
			conn.Close()
		}
	}
}
