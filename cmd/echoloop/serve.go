package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/echoloop/echoloop/server"
)

type serveCmd struct {
	certFiles `embed:"" set:"side=server"`

	Addr                 string        `default:"${default_addr}" help:"Address to listen on, HOST:PORT."`
	TLSMin               string        `name:"tls-min" default:"1.3" enum:"1.2,1.3" help:"Lowest TLS version accepted: ${enum}."`
	MaxMessageBytes      int           `default:"${default_max_message}" help:"Largest message in bytes accepted or sent, on every protocol."`
	ReadHeaderTimeout    time.Duration `default:"${default_read_header}" help:"Time a client has to send request headers."`
	IdleTimeout          time.Duration `default:"${default_idle}" help:"Close connections idle for this long."`
	HandshakeTimeout     time.Duration `default:"${default_handshake}" help:"Time a client has to finish the TLS handshake."`
	DrainTimeout         time.Duration `default:"${default_drain}" help:"On SIGINT or SIGTERM, time calls in flight have to finish."`
	MaxHeaderBytes       int           `default:"${default_max_header}" help:"Largest request header block in bytes."`
	MaxConcurrentStreams uint32        `default:"${default_max_streams}" help:"Calls in flight on one HTTP/2 connection."`
	MaxConnections       int           `default:"${default_max_connections}" help:"Open connections at once; more wait to be accepted."`
	MetricsAddr          string        `placeholder:"HOST:PORT" help:"Also serve /metrics and /healthz in plain HTTP here (host defaults to 127.0.0.1); off when empty."`
	CRL                  string        `name:"crl" placeholder:"FILE" help:"Refuse client certificates this revocation list (PEM) names; re-read when it changes."`
	AllowCN              []string      `name:"allow-cn" placeholder:"NAME" help:"Allow clients with this subject common name; repeatable."`
	AllowDNS             []string      `name:"allow-dns" placeholder:"NAME" help:"Allow clients with this DNS SAN (*.example.org for one label); repeatable."`
	AllowURI             []string      `name:"allow-uri" placeholder:"URI" help:"Allow clients with this URI SAN (spiffe://domain/* for a trust domain); repeatable."`
	AllowOU              []string      `name:"allow-ou" placeholder:"UNIT" help:"Allow clients with this organisational unit; repeatable."`
	LogFormat            string        `default:"text" enum:"text,json" help:"Log format: ${enum}."`
	LogLevel             string        `default:"info" enum:"debug,info,warn,error" help:"Lowest level logged: ${enum}."`
}

// serveVars are the defaults the serve flags show in their help.
func serveVars() map[string]string {
	return map[string]string{
		"default_addr":            server.DefaultAddr,
		"default_max_message":     fmt.Sprint(server.DefaultMaxMessageBytes),
		"default_read_header":     server.DefaultReadHeaderTimeout.String(),
		"default_idle":            server.DefaultIdleTimeout.String(),
		"default_handshake":       server.DefaultHandshakeTimeout.String(),
		"default_drain":           server.DefaultDrainTimeout.String(),
		"default_max_header":      fmt.Sprint(server.DefaultMaxHeaderBytes),
		"default_max_streams":     fmt.Sprint(server.DefaultMaxConcurrentStreams),
		"default_max_connections": fmt.Sprint(server.DefaultMaxConnections),
	}
}

// Validate is kong's hook for the checks the flags' types cannot make; it
// names every flag that is out of range, so one run shows them all.
func (c *serveCmd) Validate(kctx *kong.Context) error {
	flag := func(name string) string { return flagSource(kctx, name) }
	problems := c.policyProblems(kctx)
	positive := []struct {
		name  string
		value time.Duration
	}{
		{"read-header-timeout", c.ReadHeaderTimeout},
		{"idle-timeout", c.IdleTimeout},
		{"handshake-timeout", c.HandshakeTimeout},
		{"drain-timeout", c.DrainTimeout},
	}
	for _, p := range positive {
		if p.value <= 0 {
			problems = append(problems, fmt.Sprintf("%s must be positive, got %s", flag(p.name), p.value))
		}
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes > 1<<30 {
		problems = append(problems, fmt.Sprintf("%s must be between 1 and %d (1 GiB), got %d",
			flag("max-message-bytes"), 1<<30, c.MaxMessageBytes))
	}
	if c.MaxHeaderBytes < 1<<10 {
		problems = append(problems, fmt.Sprintf("%s must be at least 1024, got %d",
			flag("max-header-bytes"), c.MaxHeaderBytes))
	}
	if c.MaxConcurrentStreams == 0 {
		problems = append(problems, flag("max-concurrent-streams")+" must be positive, got 0")
	}
	if c.MaxConnections <= 0 {
		problems = append(problems, fmt.Sprintf("%s must be positive, got %d",
			flag("max-connections"), c.MaxConnections))
	}
	problems = append(problems, c.addrProblems(kctx)...)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// addrProblems checks --addr and --metrics-addr before anything listens:
// a port out of range, or both listeners on one port, would otherwise
// surface only as the operating system's refusal to bind.
func (c *serveCmd) addrProblems(kctx *kong.Context) []string {
	var problems []string
	addrs := []struct{ name, value string }{{"addr", c.Addr}, {"metrics-addr", c.MetricsAddr}}
	for _, a := range addrs {
		if a.value == "" && a.name == "metrics-addr" {
			continue
		}
		if err := checkListenAddr(a.value); err != nil {
			problems = append(problems, fmt.Sprintf("%s %q %v", flagSource(kctx, a.name), a.value, err))
		}
	}
	if len(problems) == 0 && c.MetricsAddr != "" && sameListener(c.Addr, c.MetricsAddr) {
		problems = append(problems, fmt.Sprintf("%s %q and %s %q are the same port: the metrics "+
			"listener needs a port of its own (for example 127.0.0.1:9464)",
			flagSource(kctx, "metrics-addr"), c.MetricsAddr, flagSource(kctx, "addr"), c.Addr))
	}
	return problems
}

// checkListenAddr says what is wrong with a listening address, HOST:PORT.
// Port 0 is allowed: the system then picks a free port.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("is not HOST:PORT (for example :8443 or 127.0.0.1:9464)")
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		// A service name such as https, as net.Listen reads one: a look-up
		// in the services database, with no network and so no deadline.
		if _, err := net.DefaultResolver.LookupPort(context.Background(), "tcp", port); err != nil {
			return fmt.Errorf("has port %q, which is neither a number nor a known service", port)
		}
		return nil
	}
	if n < 0 || n > 65535 {
		return fmt.Errorf("has port %d, outside 0 to 65535 (0 lets the system choose)", n)
	}
	return nil
}

// sameListener reports whether the metrics listener would bind a port
// --addr already holds: the same port on the same host, or on any host
// when either listens on every interface. The metrics host defaults to
// 127.0.0.1, as the server reads it.
func sameListener(addr, metricsAddr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	mHost, mPort, _ := net.SplitHostPort(metricsAddr)
	if mHost == "" {
		mHost = "127.0.0.1"
	}
	if port != mPort || port == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	if host == mHost || wildcard(host) || wildcard(mHost) {
		return true
	}
	// localhost and 127.0.0.1 are one listener: compare what the names
	// stand for, as the listeners will bind them.
	mine := listenIPs(host)
	return slices.ContainsFunc(listenIPs(mHost), func(ip string) bool { return slices.Contains(mine, ip) })
}

// listenIPs returns the addresses host stands for: itself when it is an IP
// address, what it resolves to otherwise, or nothing when it does not
// resolve (the listener will say so).
func listenIPs(host string) []string {
	if ip := net.ParseIP(host); ip != nil {
		return []string{ip.String()}
	}
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), host)
	if err != nil {
		return nil
	}
	for i, a := range addrs {
		if ip := net.ParseIP(a); ip != nil {
			addrs[i] = ip.String()
		}
	}
	return addrs
}

// policyProblems refuses a policy flag that was given but names nothing.
// Kong reads --allow-cn "" and ECHOLOOP_ALLOW_CN= as no list at all, and no
// list allows every client of the CA: an unset shell variable in
// --allow-cn "$CN" would open the server to all of them.
func (c *serveCmd) policyProblems(kctx *kong.Context) []string {
	var problems []string
	for name, values := range map[string][]string{
		"allow-cn": c.AllowCN, "allow-dns": c.AllowDNS, "allow-uri": c.AllowURI, "allow-ou": c.AllowOU,
	} {
		values = trimItems(values)
		if given(kctx, name) && (len(values) == 0 || slices.Contains(values, "")) {
			problems = append(problems, fmt.Sprintf("%s has an empty value: give what to allow, or "+
				"leave it out to allow every client of the CA", flagSource(kctx, name)))
		}
	}
	slices.Sort(problems)
	return problems
}

// trimItems trims the spaces around each item, as a comma-separated
// environment variable (" carol , client ") tends to have them.
func trimItems(items []string) []string {
	trimmed := make([]string, 0, len(items))
	for _, item := range items {
		trimmed = append(trimmed, strings.TrimSpace(item))
	}
	return trimmed
}

func (c *serveCmd) Run(ctx context.Context, out *output) error {
	// Call lines are written in batches; warnings and errors at once.
	logs := server.NewLogWriter(out.err)
	defer logs.Flush()
	log := newLogger(logs, c.LogFormat, c.LogLevel)

	caFile, certFile, keyFile := c.paths("server")
	opts := []server.Option{server.WithCredentialFiles(certFile, keyFile, caFile)}
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
		server.WithMaxHeaderBytes(c.MaxHeaderBytes),
		server.WithMaxConcurrentStreams(c.MaxConcurrentStreams),
		server.WithMaxConnections(c.MaxConnections),
		server.WithMetricsAddr(c.MetricsAddr),
		server.WithCRLFile(c.CRL),
		server.WithPolicy(server.Policy{
			CommonNames:         trimItems(c.AllowCN),
			DNSNames:            trimItems(c.AllowDNS),
			URIs:                trimItems(c.AllowURI),
			OrganizationalUnits: trimItems(c.AllowOU),
		}),
	)
	srv, err := server.New(opts...)
	if err != nil {
		return c.withInitHint(err, "server")
	}

	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", c.Addr)
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = " (another program holds the port: stop it, or choose another with --addr)"
		}
		return fmt.Errorf("listening on --addr %s: %w%s", c.Addr, err, hint)
	}
	// SIGHUP re-reads certificates, CA bundle and revocation list, as
	// daemons have long done; changes on disk are picked up without it.
	hangups := make(chan os.Signal, 1)
	signal.Notify(hangups, syscall.SIGHUP)
	defer signal.Stop(hangups)
	go func() {
		for range hangups {
			log.Info("SIGHUP: reloading")
			_ = srv.Reload() // logged inside
		}
	}()

	// Once the flags and files are known good, so that a mistake in them
	// still gets its one line.
	warnIfOldGo(log)
	return srv.Serve(ctx, ln)
}

// newLogger builds the process's logger. Levels and format come from flags
// that kong has already checked against their enums.
func newLogger(w *server.LogWriter, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(w.Handler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(w.Handler(slog.NewTextHandler(w, opts)))
}
