package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
)

type serveCmd struct {
	certFiles `embed:"" set:"side=server"`

	Addr              string        `default:"${default_addr}" help:"Address to listen on, HOST:PORT."`
	TLSMin            string        `name:"tls-min" default:"1.3" enum:"1.2,1.3" help:"Lowest TLS version accepted: ${enum}."`
	MaxMessageBytes   int           `default:"${default_max_message}" help:"Largest message in bytes accepted or sent, on every protocol."`
	ReadHeaderTimeout time.Duration `default:"${default_read_header}" help:"Time a client has to send request headers."`
	IdleTimeout       time.Duration `default:"${default_idle}" help:"Close connections idle for this long."`
	HandshakeTimeout  time.Duration `default:"${default_handshake}" help:"Time a client has to finish the TLS handshake."`
	DrainTimeout      time.Duration `default:"${default_drain}" help:"On SIGINT or SIGTERM, time calls in flight have to finish."`
	CRL               string        `name:"crl" placeholder:"FILE" help:"Refuse client certificates this revocation list (PEM) names; re-read when it changes."`
	AllowCN           []string      `name:"allow-cn" placeholder:"NAME" help:"Allow clients with this subject common name; repeatable."`
	AllowDNS          []string      `name:"allow-dns" placeholder:"NAME" help:"Allow clients with this DNS SAN (*.example.org for one label); repeatable."`
	AllowURI          []string      `name:"allow-uri" placeholder:"URI" help:"Allow clients with this URI SAN (spiffe://domain/* for a trust domain); repeatable."`
	AllowOU           []string      `name:"allow-ou" placeholder:"UNIT" help:"Allow clients with this organisational unit; repeatable."`
	LogFormat         string        `default:"text" enum:"text,json" help:"Log format: ${enum}."`
	LogLevel          string        `default:"info" enum:"debug,info,warn,error" help:"Lowest level logged: ${enum}."`
}

// serveVars are the defaults the serve flags show in their help.
func serveVars() map[string]string {
	return map[string]string{
		"default_addr":        server.DefaultAddr,
		"default_max_message": fmt.Sprint(server.DefaultMaxMessageBytes),
		"default_read_header": server.DefaultReadHeaderTimeout.String(),
		"default_idle":        server.DefaultIdleTimeout.String(),
		"default_handshake":   server.DefaultHandshakeTimeout.String(),
		"default_drain":       server.DefaultDrainTimeout.String(),
	}
}

func (c *serveCmd) Run(ctx context.Context, out *output) error {
	log := newLogger(out.err, c.LogFormat, c.LogLevel)

	opts, err := c.tlsOptions()
	if err != nil {
		return err
	}
	minVersion := uint16(tls.VersionTLS13)
	if c.TLSMin == "1.2" {
		minVersion = tls.VersionTLS12
	}
	opts = append(opts,
		server.WithLogger(log),
		server.WithMinVersion(minVersion),
		server.WithMaxMessageBytes(c.MaxMessageBytes),
		server.WithReadHeaderTimeout(c.ReadHeaderTimeout),
		server.WithIdleTimeout(c.IdleTimeout),
		server.WithHandshakeTimeout(c.HandshakeTimeout),
		server.WithDrainTimeout(c.DrainTimeout),
		server.WithCRLFile(c.CRL),
		server.WithPolicy(server.Policy{
			CommonNames:         c.AllowCN,
			DNSNames:            c.AllowDNS,
			URIs:                c.AllowURI,
			OrganizationalUnits: c.AllowOU,
		}),
	)
	srv, err := server.New(opts...)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = " (another program holds the port: stop it, or choose another with --addr)"
		}
		return fmt.Errorf("listening on --addr %s: %w%s", c.Addr, err, hint)
	}
	return srv.Serve(ctx, ln)
}

// tlsOptions loads the server's certificate and the client CA bundle, and
// refuses material that could never serve.
func (c *serveCmd) tlsOptions() ([]server.Option, error) {
	caFile, certFile, keyFile := c.paths("server")

	pair, err := pki.LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, c.withInitHint(fmt.Errorf("loading server certificate: %w", err), "server")
	}
	if now := time.Now(); now.After(pair.Leaf.NotAfter) {
		return nil, fmt.Errorf("server certificate %q expired at %s (this machine's clock says %s): "+
			"issue a new one (echoloop pki init --force for development)",
			certFile, pair.Leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	pool, _, err := pki.LoadCertPool(caFile)
	if err != nil {
		return nil, c.withInitHint(fmt.Errorf("loading client CA bundle: %w", err), "server")
	}
	return []server.Option{server.WithCertificate(pair), server.WithClientCAs(pool)}, nil
}

// newLogger builds the process's logger. Levels and format come from flags
// that kong has already checked against their enums.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
