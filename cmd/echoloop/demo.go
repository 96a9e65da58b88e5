package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
)

type demoCmd struct {
	Message string `default:"hello from the demo" help:"Message to echo."`
}

// Run is the tour: a throw-away PKI held in memory, a server on a free
// loopback port, the same call over every protocol, and a client from a
// foreign CA refused on every protocol. Nothing is written to disk.
func (c *demoCmd) Run(ctx context.Context, out *output) error {
	ca, err := pki.NewAuthority("echoloop demo CA")
	if err != nil {
		return err
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		return err
	}
	clientCert, err := ca.IssueClient("demo-client",
		pki.WithSANs("spiffe://echoloop.demo/workload/demo-client", "demo-client@echoloop.demo"))
	if err != nil {
		return err
	}

	logs := &lockedBuffer{}
	srv, err := server.New(
		server.WithCertificate(serverCert.TLSCertificate()),
		server.WithClientCAs(ca.Certificate),
		server.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	)
	if err != nil {
		return err
	}
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening on a loopback port: %w", err)
	}
	serveCtx, stopServer := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln) }()
	defer func() {
		stopServer()
		if err := <-served; err != nil {
			fmt.Fprintf(out.err, "demo: stopping the server: %v\n", err)
		}
	}()

	port := ln.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("https://localhost:%d", port)
	fmt.Fprintf(out.out, "server listening on %s with a throw-away CA %q\n", url, ca.Certificate.Subject.CommonName)
	fmt.Fprintf(out.out, "client certificate CN=%s, sha256 %s\n\n",
		clientCert.Certificate.Subject.CommonName, pki.Fingerprint(clientCert.Certificate))

	callCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	good, err := client.New(url, client.WithRootCAs(ca.Pool()), client.WithCertificate(clientCert.TLSCertificate()))
	if err != nil {
		return err
	}
	defer good.Close()
	results := good.EchoAll(callCtx, &echov1.EchoRequest{Message: c.Message})
	printResults(out.out, results)
	agreement := client.Agree(results)

	refusals, err := c.intruder(callCtx, url, ca)
	if err != nil {
		return err
	}
	fmt.Fprintf(out.out, "\na client whose certificate comes from another CA, on every protocol:\n")
	for _, line := range refusals {
		fmt.Fprintf(out.out, "  %s\n", line)
	}
	fmt.Fprintf(out.out, "\nthe server logged each refused handshake:\n")
	for _, line := range logs.refusals(len(refusals), 2*time.Second) {
		fmt.Fprintf(out.out, "  %s\n", line)
	}

	if agreement != nil {
		return fmt.Errorf("the protocols disagree: %w", agreement)
	}
	fmt.Fprintf(out.out, "\ndemo passed: one port, four protocols, one verified identity\n")
	return nil
}

// intruder calls with a certificate from a CA the server does not trust and
// returns one line per protocol. An intruder that gets through is an error.
func (c *demoCmd) intruder(
	ctx context.Context,
	url string,
	trusted *pki.Authority,
) ([]string, error) {
	foreign, err := pki.NewAuthority("someone else's CA")
	if err != nil {
		return nil, err
	}
	cert, err := foreign.IssueClient("intruder")
	if err != nil {
		return nil, err
	}
	cl, err := client.New(url, client.WithRootCAs(trusted.Pool()), client.WithCertificate(cert.TLSCertificate()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	var lines []string
	for _, p := range client.Protocols() {
		_, err := cl.Echo(ctx, p, "let me in")
		var explained *client.Error
		switch {
		case err == nil:
			return nil, fmt.Errorf("the server accepted a certificate from a foreign CA over %s", p)
		case errors.As(err, &explained):
			lines = append(lines, fmt.Sprintf("%-9s refused: %s", p, explained.Cause))
		default:
			lines = append(lines, fmt.Sprintf("%-9s refused: %v", p, err))
		}
	}
	return lines, nil
}

// lockedBuffer collects log output written from the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// refusals returns the refused-handshake lines logged so far, waiting up
// to wait for n of them: the server writes its line after it has sent the
// alert, so the client can hear of a refusal before the line exists.
func (b *lockedBuffer) refusals(n int, wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		var found []string
		for _, line := range b.lines() {
			if strings.Contains(line, "tls handshake refused") {
				found = append(found, line)
			}
		}
		if len(found) >= n || time.Now().After(deadline) {
			return found
		}
		time.Sleep(10 * time.Millisecond)
	}
}
