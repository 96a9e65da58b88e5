package server_test

// Running it for real: reloads under load, streams across a reload, bad
// files, graceful drain, deadlines, limits and metrics.

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// presentedSerial makes a fresh handshake and returns the serial of the
// certificate the server presents on it.
func presentedSerial(
	t *testing.T,
	srv *servertest.Server,
	roots []*pki.Authority,
	cert *pki.Issued,
) string {
	t.Helper()
	pool := roots[0].Pool()
	for _, r := range roots[1:] {
		pool.AddCert(r.Certificate)
	}
	conn, err := tls.Dial("tcp", srv.Addr, &tls.Config{
		RootCAs:      pool,
		ServerName:   "localhost",
		Certificates: []tls.Certificate{cert.TLSCertificate()},
	})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return pki.SerialHex(conn.ConnectionState().PeerCertificates[0])
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// load runs workers that call without pause on every protocol, each making
// a fresh client (so fresh handshakes) every few calls, until stop is
// closed. It counts calls and failures.
type load struct {
	calls, failures atomic.Int64
	mu              sync.Mutex
	firstFailure    error
	stop            chan struct{}
	done            sync.WaitGroup
}

func startLoad(
	t *testing.T,
	srv *servertest.Server,
	roots func() []*pki.Authority,
	cert func() *pki.Issued,
) *load {
	l := &load{stop: make(chan struct{})}
	for _, p := range client.Protocols() {
		for range 2 {
			l.done.Go(func() {
				for {
					pool := roots()[0].Pool()
					for _, r := range roots()[1:] {
						pool.AddCert(r.Certificate)
					}
					c, err := client.New(srv.URL, client.WithRootCAs(pool),
						client.WithCertificate(cert().TLSCertificate()))
					if err != nil {
						l.fail(err)
						return
					}
					for range 10 {
						select {
						case <-l.stop:
							c.Close()
							return
						default:
						}
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := c.Echo(ctx, p, "under load")
						cancel()
						l.calls.Add(1)
						if err != nil {
							l.fail(err)
						}
					}
					c.Close()
				}
			})
		}
	}
	return l
}

func (l *load) fail(err error) {
	l.failures.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.firstFailure == nil {
		l.firstFailure = err
	}
}

func (l *load) finish() { close(l.stop); l.done.Wait() }

func TestRotationUnderLoad(t *testing.T) {
	t.Parallel()
	srv := servertest.StartWithFiles(t, t.TempDir())
	oldCA := srv.CA
	newCA, err := pki.NewAuthority("servertest CA, next generation")
	if err != nil {
		t.Fatal(err)
	}
	newClient, err := newCA.IssueClient("client of the new CA")
	if err != nil {
		t.Fatal(err)
	}

	// Clients trust both CAs for the server's certificate throughout and
	// present the old CA's client certificate until told otherwise.
	var presented atomic.Pointer[pki.Issued]
	presented.Store(srv.Client)
	bothCAs := func() []*pki.Authority { return []*pki.Authority{oldCA, newCA} }
	work := startLoad(t, srv, bothCAs, presented.Load)

	// Five server certificates, each from the old CA, then one from the
	// new; each new handshake must present the newest at once.
	for i := range 6 {
		issuer := oldCA
		if i == 5 {
			issuer = newCA
		}
		next, err := issuer.IssueServer(pki.DefaultServerNames)
		if err != nil {
			t.Fatal(err)
		}
		srv.WriteServerCertificate(t, next)
		want := pki.SerialHex(next.Certificate)
		waitFor(t, "new handshakes present serial "+want, func() bool {
			return presentedSerial(t, srv, bothCAs(), srv.Client) == want
		})
		time.Sleep(100 * time.Millisecond) // let the load run on the new certificate
	}

	// The client CA bundle gains the new CA, and clients move to it.
	bundle := append(oldCA.CertificatePEM(), newCA.CertificatePEM()...)
	if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.CACertFile), bundle, pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a client of the new CA is accepted", func() bool {
		return presentedSerial(t, srv, bothCAs(), newClient) != "" && callsWith(t, srv, bothCAs(), newClient) == nil
	})
	presented.Store(newClient)
	time.Sleep(300 * time.Millisecond)

	work.finish()
	if work.failures.Load() != 0 || work.calls.Load() < 100 {
		t.Fatalf("%d of %d calls failed while both CAs were trusted; first: %v",
			work.failures.Load(), work.calls.Load(), work.firstFailure)
	}

	// The old CA leaves the bundle: its clients are refused from then on.
	if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.CACertFile), newCA.CertificatePEM(), pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a client of the old CA is refused", func() bool {
		return callsWith(t, srv, bothCAs(), srv.Client) != nil
	})
	if err := callsWith(t, srv, bothCAs(), newClient); err != nil {
		t.Errorf("a client of the new CA is refused after the old CA left: %v", err)
	}

	// What every reload must keep: ALPN offering h2, and a client
	// certificate required.
	conn, err := tls.Dial("tcp", srv.Addr, &tls.Config{
		RootCAs: newCA.Pool(), ServerName: "localhost", NextProtos: []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{newClient.TLSCertificate()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if alpn := conn.ConnectionState().NegotiatedProtocol; alpn != "h2" {
		t.Errorf("after the reloads ALPN chose %q, want h2", alpn)
	}
	conn.Close()
	anonymous, err := client.New(srv.URL, client.WithRootCAs(newCA.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	if _, err := anonymous.Echo(callContext(t), client.Connect, "no certificate"); err == nil {
		t.Error("after the reloads a client without a certificate was served")
	}

	reloads := 0
	for _, line := range srv.Logs() {
		if line["msg"] == "certificates reloaded" {
			reloads++
		}
	}
	if reloads < 8 {
		t.Errorf("%d reloads logged, want at least 8 (6 certificates, 2 bundles)", reloads)
	}
}

// callsWith makes one call on a fresh connection with the given certificate.
func callsWith(
	t *testing.T,
	srv *servertest.Server,
	roots []*pki.Authority,
	cert *pki.Issued,
) error {
	t.Helper()
	pool := roots[0].Pool()
	for _, r := range roots[1:] {
		pool.AddCert(r.Certificate)
	}
	c, err := client.New(srv.URL, client.WithRootCAs(pool), client.WithCertificate(cert.TLSCertificate()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Echo(callContext(t), client.GRPC, "probe")
	return err
}

func TestLongStreamSurvivesRotation(t *testing.T) {
	t.Parallel()
	srv := servertest.StartWithFiles(t, t.TempDir())
	c := newTestClient(t, srv, srv.Client)

	for _, p := range []client.Protocol{client.Connect, client.GRPC, client.GRPCWeb} {
		t.Run(string(p), func(t *testing.T) {
			var got []*echov1.EchoStreamResponse
			rotated := false
			err := c.EchoStream(callContext(t), p, &echov1.EchoStreamRequest{
				Message: "long", Count: 10, Interval: durationpb.New(50 * time.Millisecond),
			}, func(msg *echov1.EchoStreamResponse) error {
				got = append(got, msg)
				if msg.GetIndex() == 3 && !rotated {
					next, err := srv.CA.IssueServer(pki.DefaultServerNames)
					if err != nil {
						return err
					}
					srv.WriteServerCertificate(t, next)
					rotated = true
				}
				return nil
			})
			if err != nil {
				t.Fatalf("stream broke: %v", err)
			}
			if len(got) != 10 {
				t.Fatalf("%d echoes, want 10", len(got))
			}
			for i, msg := range got {
				if msg.GetIndex() != uint32(i+1) || msg.GetEcho().GetMessage() != "long" ||
					msg.GetEcho().GetPeer().GetSha256Fingerprint() != pki.Fingerprint(srv.Client.Certificate) {
					t.Errorf("echo %d = %v, want index %d with the client's identity", i, msg, i+1)
				}
			}
		})
	}
}

func TestABadCertificateOverTheGoodOneIsRefused(t *testing.T) {
	t.Parallel()
	srv := servertest.StartWithFiles(t, t.TempDir())
	before := presentedSerial(t, srv, []*pki.Authority{srv.CA}, srv.Client)

	cases := []struct {
		name  string
		write func(t *testing.T)
	}{
		{"refused/garbage certificate", func(t *testing.T) {
			if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.ServerCertFile), []byte("not a certificate\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"refused/key of another certificate", func(t *testing.T) {
			other, err := srv.CA.IssueServer(pki.DefaultServerNames)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := other.KeyPEM()
			if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.ServerKeyFile), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.write(t)
			waitFor(t, "the refused reload is logged", func() bool {
				n := 0
				for _, line := range srv.Logs() {
					if line["msg"] == "certificates not reloaded; the ones in use stay" {
						n++
					}
				}
				return n > i
			})
			if got := presentedSerial(t, srv, []*pki.Authority{srv.CA}, srv.Client); got != before {
				t.Errorf("the server presents serial %s, want the old %s", got, before)
			}
			if err := callsWith(t, srv, []*pki.Authority{srv.CA}, srv.Client); err != nil {
				t.Errorf("a call failed after a bad file: %v", err)
			}
			srv.WriteServerCertificate(t, srv.ServerCert) // the good pair again
		})
	}
}

func TestRewriteInPlaceIsReloaded(t *testing.T) {
	t.Parallel()
	srv := servertest.StartWithFiles(t, t.TempDir())
	certFile := filepath.Join(srv.CertDir, pki.ServerCertFile)
	before, err := os.Stat(certFile)
	if err != nil {
		t.Fatal(err)
	}

	// Truncate and write the same files, as an editor or `cat >` does:
	// no rename, so the watch sees only writes.
	next, err := srv.CA.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := next.KeyPEM()
	if err := os.WriteFile(filepath.Join(srv.CertDir, pki.ServerKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, next.CertificatePEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the certificate file was replaced, not rewritten in place")
	}

	want := pki.SerialHex(next.Certificate)
	waitFor(t, "the rewritten certificate is presented", func() bool {
		return presentedSerial(t, srv, []*pki.Authority{srv.CA}, srv.Client) == want
	})
	if err := callsWith(t, srv, []*pki.Authority{srv.CA}, srv.Client); err != nil {
		t.Errorf("a call after the rewrite failed: %v", err)
	}
}

func TestKubernetesStyleSymlinkSwap(t *testing.T) {
	t.Parallel()
	// A projected volume: the files are links through ..data to a
	// timestamped directory, and an update swaps ..data in one rename.
	root := t.TempDir()
	first := filepath.Join(root, "..2026_12_03_01")
	if err := os.Mkdir(first, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := servertest.StartWithFiles(t, first)
	if err := os.Symlink("..2026_12_03_01", filepath.Join(root, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{pki.CACertFile, pki.ServerCertFile, pki.ServerKeyFile} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Serve from the links, as a pod would.
	linkedSrv := serveCredentialFiles(t, root)
	before := presentedSerial(t, linkedSrv, []*pki.Authority{srv.CA}, srv.Client) // serving, and watching
	if before != pki.SerialHex(srv.ServerCert.Certificate) {
		t.Fatalf("serving serial %s through the links, want %s", before, pki.SerialHex(srv.ServerCert.Certificate))
	}

	next, err := srv.CA.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(root, "..2026_12_03_02")
	if err := os.Mkdir(second, 0o755); err != nil {
		t.Fatal(err)
	}
	key, _ := next.KeyPEM()
	for name, data := range map[string][]byte{
		pki.CACertFile: srv.CA.CertificatePEM(), pki.ServerCertFile: next.CertificatePEM(), pki.ServerKeyFile: key,
	} {
		if err := os.WriteFile(filepath.Join(second, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("..2026_12_03_02", filepath.Join(root, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")); err != nil {
		t.Fatal(err)
	}

	want := pki.SerialHex(next.Certificate)
	waitFor(t, "the swapped certificate is presented", func() bool {
		return presentedSerial(t, linkedSrv, []*pki.Authority{srv.CA}, srv.Client) == want
	})
}

// serveCredentialFiles starts a server on the credential files in dir,
// logging nothing, until the test ends.
func serveCredentialFiles(t *testing.T, dir string) *servertest.Server {
	t.Helper()
	srv, err := server.New(
		server.WithCredentialFiles(filepath.Join(dir, pki.ServerCertFile), filepath.Join(dir, pki.ServerKeyFile),
			filepath.Join(dir, pki.CACertFile)),
		server.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	<-srv.Serving()
	return &servertest.Server{Addr: ln.Addr().String(), URL: "https://" + ln.Addr().String()}
}

func TestLinksIntoAnotherDirectoryFollowTheirTargets(t *testing.T) {
	t.Parallel()
	// The files live in one directory and the server is given links to
	// them from another, as with /etc/ssl/private pointing into a
	// certificate manager's store; a rewrite raises events only there.
	store := t.TempDir()
	srv := servertest.StartWithFiles(t, store)
	links := t.TempDir()
	for _, name := range []string{pki.CACertFile, pki.ServerCertFile, pki.ServerKeyFile} {
		if err := os.Symlink(filepath.Join(store, name), filepath.Join(links, name)); err != nil {
			t.Fatal(err)
		}
	}
	linkedSrv := serveCredentialFiles(t, links)

	next, err := srv.CA.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	srv.WriteServerCertificate(t, next)
	want := pki.SerialHex(next.Certificate)
	waitFor(t, "the certificate rewritten behind the links is presented", func() bool {
		return presentedSerial(t, linkedSrv, []*pki.Authority{srv.CA}, srv.Client) == want
	})
}

func TestDrainLetsCallsInFlightFinish(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithMetricsAddr("127.0.0.1:0"))
	c := newTestClient(t, srv, srv.Client)
	healthz := func() (int, error) {
		resp, err := http.Get("http://" + srv.Server.MetricsAddr() + "/healthz")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Serve opens the metrics port as it starts, a moment after Start.
	waitFor(t, "/healthz answers 200 before the drain", func() bool {
		code, _ := healthz()
		return code == http.StatusOK
	})

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, p := range client.Protocols() {
		for range 2 {
			wg.Go(func() {
				_, err := c.Call(callContext(t), p, &echov1.EchoRequest{
					Message: "in flight", Delay: durationpb.New(1500 * time.Millisecond)})
				if err != nil {
					errs <- errors.New(string(p) + ": " + err.Error())
				}
			})
		}
	}
	hc := mtlsHTTPClient(t, srv)
	waitFor(t, "eight calls are in flight", func() bool {
		resp, err := hc.Get(srv.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		// The scrape itself is a ninth call in flight.
		return strings.Contains(string(body), "\necholoop_calls_in_flight 9\n")
	})
	hc.CloseIdleConnections()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop() }()

	// While the calls finish, health checks hear that the server is going.
	waitFor(t, "/healthz answers 503 during the drain", func() bool {
		code, _ := healthz()
		return code == http.StatusServiceUnavailable
	})
	// grpc.health.v1 does not: the listener is closed, and connections
	// already made have been told to take no new call (GOAWAY), so a
	// health call, as `echoloop health` makes it, finds no one. The
	// README's Operations section says so.
	_, err := c.Health(callContext(t))
	var explained *client.Error
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "nothing is listening") {
		t.Errorf("health during the drain: %v, want nothing listening", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("drain returned %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a call in flight during the drain failed: %v", err)
	}

	// Once drained, neither port takes a new connection.
	for _, addr := range []string{srv.Addr, srv.Server.MetricsAddr()} {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after the drain", addr)
		}
	}
}

func TestDeadlinesOnEveryProtocol(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newTestClient(t, srv, srv.Client)

	for _, p := range client.Protocols() {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			var err error
			if p == client.HTTP {
				_, err = c.Call(ctx, p, &echov1.EchoRequest{Message: "slow", Delay: durationpb.New(10 * time.Second)})
			} else {
				err = c.EchoStream(ctx, p, &echov1.EchoStreamRequest{
					Message: "slow", Count: 100, Interval: durationpb.New(time.Second),
				}, func(*echov1.EchoStreamResponse) error { return nil })
			}
			if code := connect.CodeOf(err); code != connect.CodeDeadlineExceeded {
				t.Errorf("code = %v (%v), want deadline_exceeded", code, err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the call took %s to give up, want about the deadline", took)
			}
		})
	}

	// The server stopped working on each call near the deadline: it either
	// saw the deadline itself (deadline_exceeded) or saw the client give up
	// first (canceled); which comes first is a race the test cannot fix.
	t.Cleanup(func() {
		waitFor(t, "the server logs the four calls as ended early", func() bool {
			ended := 0
			for _, line := range srv.Logs() {
				code := line[server.KeyCode]
				if line["msg"] == "call" && (code == "deadline_exceeded" || code == "canceled") {
					ended++
				}
			}
			return ended >= len(client.Protocols())
		})
	})
}

func TestThePlainRouteCarriesTheDeadline(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	hc := mtlsHTTPClient(t, srv)
	// No deadline on the client's side: the server alone must end the call.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+server.PlainHTTPPath,
		strings.NewReader(`{"message":"slow","delay":"10s"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Server-Timeout", "0.3")
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if time.Since(start) > 5*time.Second || !strings.Contains(string(body), `"code":4`) {
		t.Errorf("answered %d %s after %s, want deadline_exceeded (4) after about 0.3s",
			resp.StatusCode, body, time.Since(start))
	}
}

func TestStreamsOnEveryRPCProtocol(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newTestClient(t, srv, srv.Client)
	want := pki.Fingerprint(srv.Client.Certificate)

	for _, p := range []client.Protocol{client.Connect, client.GRPC, client.GRPCWeb} {
		t.Run("ok/chat/"+string(p), func(t *testing.T) {
			t.Parallel()
			var echoes []string
			messages := slices.Values([]string{"one", "two", "three"})
			err := c.EchoChat(callContext(t), p, messages, func(msg *echov1.EchoChatResponse) error {
				if msg.GetEcho().GetPeer().GetSha256Fingerprint() != want {
					t.Errorf("chat echo %d carries another identity", msg.GetIndex())
				}
				echoes = append(echoes, msg.GetEcho().GetMessage())
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(echoes, ",") != "one,two,three" {
				t.Errorf("echoes = %q", echoes)
			}
		})
	}

	t.Run("refused/chat over HTTP/1.1 fails at once", func(t *testing.T) {
		t.Parallel()
		h1 := newTestClient(t, srv, srv.Client, client.WithHTTP1())
		err := h1.EchoChat(callContext(t), client.Connect, slices.Values([]string{"x"}),
			func(*echov1.EchoChatResponse) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "needs HTTP/2") {
			t.Errorf("error = %v, want one saying the stream needs HTTP/2", err)
		}
	})

	t.Run("refused/a raw bidirectional request over HTTP/1.1 is answered at once", func(t *testing.T) {
		t.Parallel()
		transport := &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: srv.CA.Pool(), Certificates: []tls.Certificate{srv.Client.TLSCertificate()},
			NextProtos: []string{"http/1.1"},
		}}
		defer transport.CloseIdleConnections()
		body, writer := io.Pipe() // a body that never ends, as a chat's does
		defer writer.Close()
		req, err := http.NewRequestWithContext(callContext(t), http.MethodPost,
			srv.URL+"/echo.v1.EchoService/EchoChat", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/connect+proto")
		start := time.Now()
		resp, err := transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || time.Since(start) > 5*time.Second {
			t.Errorf("answered %d after %s, want a prompt refusal", resp.StatusCode, time.Since(start))
		}
	})
}

func TestConnectionCap(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithMaxConnections(1))

	hog, err := net.Dial("tcp", srv.Addr) // holds the only place
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() { result <- callsWith(t, srv, []*pki.Authority{srv.CA}, srv.Client) }()
	select {
	case err := <-result:
		t.Fatalf("a second connection was served while the cap was reached (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	hog.Close()
	if err := <-result; err != nil {
		t.Errorf("the waiting call failed once a place was free: %v", err)
	}
}

func TestMetricsMoveAsTheServerWorks(t *testing.T) {
	t.Parallel()
	// No host: the plain port binds loopback only.
	srv := servertest.StartWithFiles(t, t.TempDir(), server.WithMetricsAddr(":0"))
	hc := mtlsHTTPClient(t, srv)
	c := newTestClient(t, srv, srv.Client)

	// One call per protocol, one call refused as invalid, one refused
	// handshake, paths the port does not serve, a reload that takes and
	// one that is refused.
	for _, p := range client.Protocols() {
		if _, err := c.Echo(callContext(t), p, "counted"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Call(callContext(t), client.HTTP, &echov1.EchoRequest{Delay: durationpb.New(time.Hour)})
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("an hour's delay: %v, want invalid_argument", err)
	}
	anonymous := newTestClient(t, srv, nil)
	_, _ = anonymous.Echo(callContext(t), client.GRPC, "refused")
	srv.WaitForRefusals(t, server.ReasonNoCertificate, 1)
	for _, path := range []string{"/made/up/1", "/made/up/2", "/echo.v1.EchoService/Nope"} {
		resp, err := hc.Post(srv.URL+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := hc.Get(srv.URL + "/made/up/3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	next, err := srv.CA.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	srv.WriteServerCertificate(t, next)
	waitFor(t, "the new certificate is presented", func() bool {
		return presentedSerial(t, srv, []*pki.Authority{srv.CA}, srv.Client) == pki.SerialHex(next.Certificate)
	})
	garbage := []byte("not a certificate\n")
	if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.ServerCertFile), garbage, pki.CertFileMode); err != nil {
		t.Fatal(err)
	}

	scrape := func(url string, hc *http.Client) string {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	var text string
	waitFor(t, "the refused reload is counted", func() bool {
		text = scrape(srv.URL+"/metrics", hc)
		return metricValue(text, `echoloop_reloads_total{result="failed",what="certificates"}`) >= 1
	})

	echo := `procedure="/echo.v1.EchoService/Echo"`
	for series, want := range map[string]float64{
		`echoloop_calls_total{code="ok",` + echo + `,protocol="connect"}`:             1,
		`echoloop_calls_total{code="ok",` + echo + `,protocol="grpc"}`:                1,
		`echoloop_calls_total{code="ok",` + echo + `,protocol="grpc-web"}`:            1,
		`echoloop_calls_total{code="ok",` + echo + `,protocol="http"}`:                1,
		`echoloop_calls_total{code="invalid_argument",` + echo + `,protocol="http"}`:  1,
		`echoloop_call_duration_seconds_count{` + echo + `,protocol="grpc"}`:          1,
		`echoloop_calls_total{code="not_found",procedure="other",protocol="connect"}`: 3,
		`echoloop_calls_total{code="not_found",procedure="other",protocol="http"}`:    1,
	} {
		if got := metricValue(text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The refused client may make a second handshake to recover the alert
	// its transport lost.
	if got := metricValue(text, `echoloop_handshakes_refused_total{reason="no_certificate"}`); got < 1 || got > 2 {
		t.Errorf("refused handshakes without a certificate = %v, want 1 or 2", got)
	}
	if got := metricValue(text, `echoloop_reloads_total{result="ok",what="certificates"}`); got < 1 {
		t.Errorf("successful certificate reloads = %v, want at least 1", got)
	}
	for _, want := range []string{
		`echoloop_certificate_expiry_seconds{role="server"`,
		`echoloop_certificate_expiry_seconds{role="client_ca"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "/made/up") || strings.Contains(text, "EchoService/Nope") {
		t.Error("/metrics has a series for a path the port does not serve")
	}
	if strings.Contains(text, `procedure="/metrics"`) {
		t.Error("/metrics counts its own scrapes")
	}

	// A scrape is logged as the plain HTTP request it is, not as an RPC.
	scrapes := 0
	for _, line := range srv.Logs() {
		if line["msg"] == "call" && line["procedure"] == "/metrics" {
			scrapes++
			if line["protocol"] != "http" || line["code"] != "ok" {
				t.Errorf("a scrape of /metrics is logged as %v", line)
			}
		}
	}
	if scrapes == 0 {
		t.Error("no scrape of /metrics in the log")
	}

	// The plain address serves the same figures, and /healthz, to anyone
	// on the machine, and to no one else.
	if addr := srv.Server.MetricsAddr(); !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("metrics address %q, want 127.0.0.1 for a listen address without a host", addr)
	}
	plain := scrape("http://"+srv.Server.MetricsAddr()+"/metrics", http.DefaultClient)
	if metricValue(plain, `echoloop_calls_total{code="ok",`+echo+`,protocol="grpc"}`) != 1 {
		t.Error("the plain metrics address does not serve the calls counter")
	}
	health, err := http.Get("http://" + srv.Server.MetricsAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	health.Body.Close()
	if health.StatusCode != http.StatusOK {
		t.Errorf("/healthz answered %d, want 200 while serving", health.StatusCode)
	}
}

// metricValue reads one series' value from the Prometheus text format; -1
// when the series is absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		value, found := strings.CutPrefix(line, series+" ")
		if !found {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

func TestOutOfBoundsRequestsAreInvalid(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newTestClient(t, srv, srv.Client)

	_, err := c.Call(callContext(t), client.HTTP, &echov1.EchoRequest{Delay: durationpb.New(time.Hour)})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "delay must be between") {
		t.Errorf("an hour's delay: %v, want invalid_argument", err)
	}
	for _, req := range []*echov1.EchoStreamRequest{
		{Count: 10001},
		{Count: 2, Interval: durationpb.New(-time.Second)},
	} {
		err := c.EchoStream(callContext(t), client.GRPC, req, func(*echov1.EchoStreamResponse) error { return nil })
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("stream %v: %v, want invalid_argument", req, err)
		}
	}
}

func TestARemovedCAsClientCannotResumeItsWayBack(t *testing.T) {
	t.Parallel()
	srv := servertest.StartWithFiles(t, t.TempDir())
	newCA, err := pki.NewAuthority("servertest CA, next generation")
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(srv.CA.CertificatePEM(), newCA.CertificatePEM()...)
	if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.CACertFile), bundle, pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bundle with both CAs is in use", func() bool {
		return reloadsLogged(srv) >= 1
	})

	// One session cache, as a long-lived client keeps: its second
	// connection resumes the first one's session.
	config := clientTLS(srv, srv.Client, "http/1.1")
	config.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	handshake := func() (tls.ConnectionState, error) {
		conn, err := tls.Dial("tcp", srv.Addr, config)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		// Under TLS 1.3 the ticket, and any refusal, arrive after the
		// handshake: read until the server speaks or the deadline passes.
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		if err != nil && !isTimeout(err) {
			return conn.ConnectionState(), err
		}
		return conn.ConnectionState(), nil
	}
	if _, err := handshake(); err != nil {
		t.Fatal(err)
	}
	state, err := handshake()
	if err != nil || !state.DidResume {
		t.Fatalf("second connection: resumed %v, %v; want a resumed session while the CA is trusted",
			state.DidResume, err)
	}

	// The old CA leaves the bundle; the cached session must not let its
	// client back in.
	if err := pki.WriteFile(filepath.Join(srv.CertDir, pki.CACertFile), newCA.CertificatePEM(),
		pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old CA's clients are refused", func() bool {
		_, err := handshake()
		return err != nil
	})
}

// reloadsLogged counts the certificate reloads the server has logged.
func reloadsLogged(srv *servertest.Server) int {
	n := 0
	for _, line := range srv.Logs() {
		if line["msg"] == "certificates reloaded" {
			n++
		}
	}
	return n
}
