package client_test

// Ports that are not TLS servers, as real listeners on loopback: one that
// hangs up at once, one that reads a little and then hangs up (the kernel
// answers the rest with a reset), and ones that greet first in a protocol
// of their own. Each must get a sentence that says what was seen, never a
// bare EOF or reset.

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/server/servertest"
)

// listen serves every connection to a loopback port with serve, until the
// test ends.
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				serve(conn)
			}()
		}
	}()
	return "https://" + ln.Addr().String()
}

// greeter sends a banner, then waits for the client to hang up.
func greeter(banner string) func(net.Conn) {
	return func(conn net.Conn) {
		_, _ = io.WriteString(conn, banner)
		_, _ = io.Copy(io.Discard, conn)
	}
}

func TestPortsThatAreNotTLSAreToldApart(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t) // only for a CA and a client certificate
	const cut = "closed the connection during the TLS handshake without a TLS alert: it is not a TLS server, " +
		"or a proxy or firewall in between cut the connection"
	cases := []struct {
		name      string
		serve     func(net.Conn)
		wantCause string
	}{
		{"refused/hangs up at once", func(net.Conn) {}, cut},
		{"refused/reads a little, then hangs up", func(conn net.Conn) { _, _ = conn.Read(make([]byte, 10)) }, cut},
		{"refused/an SSH server", greeter("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
			`speaks SSH, neither TLS nor HTTP: its first bytes are "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"`},
		{"refused/an SMTP server", greeter("220 mail.example.org ESMTP ready\r\n"),
			`speaks a protocol that is neither TLS nor HTTP: its first bytes are "220 mail.example.org ESMTP ready"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := listen(t, tc.serve)
			for _, p := range client.Protocols() {
				c := newClient(t, url, client.WithRootCAs(srv.CA.Pool()), client.WithCertificate(srv.Client.TLSCertificate()))
				_, err := c.Echo(callContext(t), p, "hello?")
				var explained *client.Error
				if !errors.As(err, &explained) {
					t.Fatalf("%s: error = %v, want an explained one", p, err)
				}
				if !strings.Contains(explained.Cause, tc.wantCause) || explained.Fix == "" {
					t.Errorf("%s: cause %q, want %q with a fix", p, explained.Cause, tc.wantCause)
				}
				if code := connect.CodeOf(err); code != connect.CodeUnavailable {
					t.Errorf("%s: code %v, want unavailable", p, code)
				}
			}

			caFile, certFile, keyFile := srv.WriteFiles(t, t.TempDir())
			steps, ok := runDoctor(t, client.DoctorConfig{URL: url, CAFile: caFile, CertFile: certFile, KeyFile: keyFile})
			if last := lastStep(steps); ok || last.Check != "TLS handshake and the server's certificate" ||
				!strings.Contains(last.Detail, tc.wantCause) {
				t.Errorf("doctor's last step = %+v, want the handshake to fail with %q", last, tc.wantCause)
			}
		})
	}
}
