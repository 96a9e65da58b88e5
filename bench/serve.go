package main

// The server role: the suite runs each server under test as a process of
// its own, this very program started again with -serve KIND, so that the
// CPU, allocations and write system calls it reports belong to that server
// alone and not to the load generator beside it.
//
// The role prints {"addr": "127.0.0.1:PORT"} on standard output once it
// listens, then answers each line read on standard input with one JSON
// line of stats (see procStats); "gc" collects garbage first, for memory
// figures. It stops when standard input closes.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
)

// The kinds of server the suite compares.
const (
	kindEcholoop      = "echoloop"       // server.New, everything on
	kindGRPC          = "grpc-go"        // grpc.NewServer on its own listener
	kindGRPCServeHTTP = "grpc-servehttp" // grpc-go's ServeHTTP on net/http
	kindConnect       = "connect-go"     // a bare connect-go handler on net/http
	kindTLS           = "crypto-tls"     // a bare crypto/tls listener, for handshakes
)

// procStats is what a server process says of itself.
type procStats struct {
	CPU        time.Duration `json:"cpu"` // user + system, getrusage(RUSAGE_SELF)
	Mallocs    uint64        `json:"mallocs"`
	AllocBytes uint64        `json:"allocBytes"`
	NumGC      uint32        `json:"numGC"`
	HeapInuse  uint64        `json:"heapInuse"`
	StackInuse uint64        `json:"stackInuse"`
	RSS        uint64        `json:"rss"`
	Writes     uint64        `json:"writes"` // write system calls, syscw in /proc/self/io
	Reads      uint64        `json:"reads"`  // read system calls, syscr
	Goroutines int           `json:"goroutines"`
}

// serveRole runs one server of the given kind until standard input closes.
func serveRole(kind, certs, profile string) error {
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	serve, err := newServer(kind, certs)
	if err != nil {
		return err
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return fmt.Errorf("creating the CPU profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln) }()

	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]string{"addr": ln.Addr().String()}); err != nil {
		return fmt.Errorf("writing the address: %w", err)
	}
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if strings.TrimSpace(lines.Text()) == "gc" {
			runtime.GC()
			runtime.GC() // a second cycle frees what the first one's finalizers let go
		}
		stats, err := readStats()
		if err != nil {
			return err
		}
		if err := out.Encode(stats); err != nil {
			return fmt.Errorf("writing stats: %w", err)
		}
	}

	cancel()
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-time.After(5 * time.Second):
	}
	return nil
}

// readStats reads the process's own counters.
func readStats() (procStats, error) {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return procStats{}, fmt.Errorf("getrusage: %w", err)
	}
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	stats := procStats{
		CPU:        time.Duration(usage.Utime.Nano() + usage.Stime.Nano()),
		Mallocs:    mem.Mallocs,
		AllocBytes: mem.TotalAlloc,
		NumGC:      mem.NumGC,
		HeapInuse:  mem.HeapInuse,
		StackInuse: mem.StackInuse,
		Goroutines: runtime.NumGoroutine(),
	}

	io, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return procStats{}, fmt.Errorf("reading system call counts: %w", err)
	}
	for line := range strings.Lines(string(io)) {
		var name string
		var value uint64
		if _, err := fmt.Sscanf(line, "%s %d", &name, &value); err != nil {
			continue
		}
		switch name {
		case "syscw:":
			stats.Writes = value
		case "syscr:":
			stats.Reads = value
		}
	}
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return procStats{}, fmt.Errorf("reading memory use: %w", err)
	}
	var size, resident uint64
	if _, err := fmt.Sscanf(string(statm), "%d %d", &size, &resident); err == nil {
		stats.RSS = resident * uint64(os.Getpagesize()) //nolint:gosec // G115: a page size is positive
	}
	return stats, nil
}

// serveFunc serves on ln until ctx ends.
type serveFunc func(ctx context.Context, ln net.Listener) error

// material is what every kind of server reads from the certificates
// directory.
type material struct {
	tls    *tls.Config // for the baselines: the settings echoloop's port has
	answer answerer
}

func loadMaterial(certs string) (*material, error) {
	pair, err := pki.LoadKeyPair(filepath.Join(certs, pki.ServerCertFile), filepath.Join(certs, pki.ServerKeyFile))
	if err != nil {
		return nil, err
	}
	pool, _, err := pki.LoadCertPool(filepath.Join(certs, pki.CACertFile))
	if err != nil {
		return nil, err
	}
	clientCerts, err := pki.LoadCertificates(filepath.Join(certs, pki.ClientCertFile))
	if err != nil {
		return nil, err
	}
	cas, err := pki.LoadCertificates(filepath.Join(certs, pki.CACertFile))
	if err != nil {
		return nil, err
	}
	config := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{http2.NextProtoTLS, "http/1.1"},
	}
	chain := append(clientCerts[:1:1], cas...)
	return &material{tls: config, answer: newAnswerer(chain)}, nil
}

// answerer builds the baselines' answers. They send the same EchoResponse
// as echoloop, peer included, so that the bytes on the wire are the same;
// but the peer is built once, at start, from the client certificate in
// the directory, rather than from each connection's verified chain: the
// baselines do none of the work of identity, which is part of what
// echoloop is measured for.
type answerer struct {
	peer        *echov1.Peer
	connections map[string]*echov1.Connection
}

func newAnswerer(chain []*x509.Certificate) answerer {
	a := answerer{peer: server.PeerFromChain(chain), connections: map[string]*echov1.Connection{}}
	for _, protocol := range []string{server.ProtocolConnect, server.ProtocolGRPC, server.ProtocolGRPCWeb,
		server.ProtocolHTTP} {
		a.connections[protocol] = &echov1.Connection{
			Protocol:    protocol,
			HttpVersion: "HTTP/2.0",
			TlsVersion:  "TLS 1.3",
			CipherSuite: "TLS_AES_128_GCM_SHA256",
			Alpn:        http2.NextProtoTLS,
			ServerName:  "127.0.0.1",
		}
	}
	return a
}

func (a answerer) echo(message, protocol string) *echov1.EchoResponse {
	return &echov1.EchoResponse{Message: message, Peer: a.peer, Connection: a.connections[protocol]}
}

func newServer(kind, certs string) (serveFunc, error) {
	m, err := loadMaterial(certs)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindEcholoop:
		return newEcholoop(certs)
	case kindGRPC:
		gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(m.tls)))
		gs.RegisterService(&echoServiceDesc, m.answer)
		return func(ctx context.Context, ln net.Listener) error {
			go func() { <-ctx.Done(); gs.Stop() }()
			return gs.Serve(ln)
		}, nil
	case kindGRPCServeHTTP:
		gs := grpc.NewServer()
		gs.RegisterService(&echoServiceDesc, m.answer)
		return serveHTTP(m.tls, gs)
	case kindConnect:
		return serveHTTP(m.tls, bareConnect(m.answer))
	case kindTLS:
		return func(ctx context.Context, ln net.Listener) error {
			return serveBareTLS(ctx, tls.NewListener(ln, m.tls))
		}, nil
	}
	return nil, fmt.Errorf("unknown server kind %q", kind)
}

// newEcholoop is echoloop as `echoloop serve --log-format json` runs it:
// credentials read from files and watched, a JSON access log line per
// call written to standard error in batches (the suite sends it to a
// file), metrics, policy checks.
func newEcholoop(certs string) (serveFunc, error) {
	logs := server.NewLogWriter(os.Stderr)
	log := slog.New(logs.Handler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	srv, err := server.New(
		server.WithCredentialFiles(filepath.Join(certs, pki.ServerCertFile),
			filepath.Join(certs, pki.ServerKeyFile), filepath.Join(certs, pki.CACertFile)),
		server.WithLogger(log),
		// Two knobs differ from serve's defaults, for the idle connection
		// count alone: the count's connections must outlive its run, and
		// 10,000 of them must fit under the cap.
		server.WithIdleTimeout(time.Hour),
		server.WithMaxConnections(4*server.DefaultMaxConnections),
	)
	if err != nil {
		return nil, err
	}
	return srv.Serve, nil
}

// serveHTTP serves handler over TLS on net/http with HTTP/2 configured as
// echoloop configures it, so that only what is behind the handler differs.
func serveHTTP(config *tls.Config, handler http.Handler) (serveFunc, error) {
	hs := &http.Server{Handler: handler, TLSConfig: config.Clone(), ReadHeaderTimeout: 10 * time.Second}
	err := http2.ConfigureServer(hs, &http2.Server{
		MaxConcurrentStreams:         server.DefaultMaxConcurrentStreams,
		MaxUploadBufferPerConnection: 1 << 20,
		MaxUploadBufferPerStream:     1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring HTTP/2: %w", err)
	}
	return func(ctx context.Context, ln net.Listener) error {
		go func() { <-ctx.Done(); hs.Close() }()
		return hs.Serve(tls.NewListener(ln, hs.TLSConfig))
	}, nil
}

// echoServiceDesc registers Echo with grpc-go by hand. Generated grpc-go
// code would serve the same, but it would put a second generator, and a
// second copy of the service in gen/, into the project for the sake of
// one benchmark; this is the one method it needs.
var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: echov1connect.EchoServiceName,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := &echov1.EchoRequest{}
			if err := decode(req); err != nil {
				return nil, err
			}
			return srv.(answerer).echo(req.GetMessage(), server.ProtocolGRPC), nil
		},
	}},
	Metadata: "echo/v1/echo.proto",
}

// bareConnect is connect-go's generated handler and nothing else: no
// interceptors, identity, policy, access log, metrics or transcoder. The
// plain route is answered by connect-go's own JSON unary call under
// another path, with the deadline moved to the header connect-go reads.
//
// It takes two choices of echoloop's that decide the bytes on the wire:
// answers under 1 KiB go uncompressed (connect-go's default gzips every
// answer a client will take gzipped), and JSON answers show every field,
// empty ones too, as echoloop's contract has them.
func bareConnect(a answerer) http.Handler {
	path, handler := echov1connect.NewEchoServiceHandler(bareEcho{a: a},
		connect.WithCompressMinBytes(1<<10), connect.WithCodec(everyFieldJSON{}))
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	mux.HandleFunc("POST "+server.PlainHTTPPath, func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = echov1connect.EchoServiceEchoProcedure
		// The deadline, which echoloop's client sends in seconds on this
		// route, in the header connect-go reads: the call is the same,
		// deadline and its timer included.
		if seconds, err := strconv.ParseFloat(r.Header.Get("X-Server-Timeout"), 64); err == nil && seconds > 0 {
			r.Header.Set("Connect-Timeout-Ms", strconv.FormatInt(int64(math.Ceil(seconds*1000)), 10))
		}
		handler.ServeHTTP(w, r)
	})
	return mux
}

// everyFieldJSON is connect-go's JSON codec with empty fields shown.
type everyFieldJSON struct{}

func (everyFieldJSON) Name() string { return "json" }

func (everyFieldJSON) Marshal(v any) ([]byte, error) {
	return protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(v.(proto.Message))
}

func (everyFieldJSON) Unmarshal(data []byte, v any) error {
	return protojson.Unmarshal(data, v.(proto.Message))
}

type bareEcho struct {
	a answerer
	echov1connect.UnimplementedEchoServiceHandler
}

func (b bareEcho) Echo(
	_ context.Context,
	req *connect.Request[echov1.EchoRequest],
) (*connect.Response[echov1.EchoResponse], error) {
	protocol := server.ProtocolConnect
	switch req.Peer().Protocol {
	case connect.ProtocolGRPC:
		protocol = server.ProtocolGRPC
	case connect.ProtocolGRPCWeb:
		protocol = server.ProtocolGRPCWeb
	}
	return connect.NewResponse(b.a.echo(req.Msg.GetMessage(), protocol)), nil
}

// serveBareTLS completes each handshake and answers with an empty HTTP/2
// SETTINGS frame, as an HTTP/2 server's first bytes are, then waits for the
// client to hang up: the handshake and nothing else.
func serveBareTLS(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); ln.Close() }()
	settings := []byte{0, 0, 0, 0x4, 0, 0, 0, 0, 0}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := conn.(*tls.Conn).HandshakeContext(hctx); err != nil {
				return
			}
			if _, err := conn.Write(settings); err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, conn)
		}()
	}
}
