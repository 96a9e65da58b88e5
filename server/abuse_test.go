package server_test

// Abuse on loopback: each test attacks a real server for a bounded count
// and time while a well-behaved mTLS client keeps calling it, and asserts
// that the attack is cut where the server's limits say, that the client
// never fails, and that memory and goroutines stay bounded. None runs in
// parallel with other tests, so that the memory figures are this attack's.

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// slack is what a timeout may overrun by on a loaded machine with the race
// detector on.
const slack = 3 * time.Second

const mib = 1 << 20

// rpcShape is how one protocol's request looks on the wire.
type rpcShape struct {
	protocol    string
	path        string
	contentType string
}

var shapes = []rpcShape{
	{"connect", "/echo.v1.EchoService/Echo", "application/proto"},
	{"grpc", "/echo.v1.EchoService/Echo", "application/grpc"},
	{"grpc-web", "/echo.v1.EchoService/Echo", "application/grpc-web+proto"},
	{"http", server.PlainHTTPPath, "application/json"},
}

// attackResults collects what concurrent attackers saw.
type attackResults struct {
	mu       sync.Mutex
	errs     []error
	longest  time.Duration
	shortest time.Duration
	count    int
}

func (r *attackResults) add(elapsed time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if err != nil {
		r.errs = append(r.errs, err)
		return
	}
	r.longest = max(r.longest, elapsed)
	if r.shortest == 0 || elapsed < r.shortest {
		r.shortest = elapsed
	}
}

func (r *attackResults) check(t *testing.T, what string, earliest, latest time.Duration) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("%s: %d connections, closed after %s to %s", what, r.count,
		r.shortest.Round(time.Millisecond), r.longest.Round(time.Millisecond))
	for i, err := range r.errs {
		if i == 3 {
			t.Errorf("%s: %d more like these", what, len(r.errs)-3)
			break
		}
		t.Errorf("%s: %v", what, err)
	}
	if r.shortest < earliest {
		t.Errorf("%s: a connection was closed after %s, before the timeout of %s: closed for another reason",
			what, r.shortest, earliest)
	}
	if r.longest > latest {
		t.Errorf("%s: a connection stayed open %s, past the %s its timeout allows", what, r.longest, latest)
	}
}

func TestSlowHeadersAreCut(t *testing.T) {
	const headerTimeout, idleTimeout = 500 * time.Millisecond, time.Second
	srv := servertest.Start(t, server.WithReadHeaderTimeout(headerTimeout), server.WithIdleTimeout(idleTimeout))
	steady := startSteadyCaller(t, srv)
	memory := watchMemory(t)

	// 400 bytes of header at 50 ms a byte would take 20 s to arrive.
	const trickle, attackers = 50 * time.Millisecond, 40
	padding := strings.Repeat("a", 400)
	var http1, http2Results attackResults
	var wg sync.WaitGroup
	for range attackers {
		// HTTP/1.1: the request line and headers, one byte at a time.
		wg.Go(func() {
			conn, err := dialTLS(srv, "http/1.1")
			if err != nil {
				http1.add(0, err)
				return
			}
			defer conn.Close()
			request := "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + padding + "\r\n\r\n"
			go func() {
				for i := range len(request) {
					if _, err := io.WriteString(conn, request[i:i+1]); err != nil {
						return
					}
					time.Sleep(trickle)
				}
			}()
			http1.add(closedAfter(conn, headerTimeout+slack))
		})

		// HTTP/2: a HEADERS frame whose header block never ends, followed
		// by one CONTINUATION byte at a time. x/net's server creates no
		// stream until the block is complete, so the connection is still
		// idle, and the idle timeout closes it (with a GOAWAY and a one
		// second grace).
		wg.Go(func() {
			h, err := dialH2(srv)
			if err != nil {
				http2Results.add(0, err)
				return
			}
			defer h.conn.Close()
			block := h.headerBlock("/echo.v1.EchoService/Echo", "application/grpc", "x-slow", padding)
			start := time.Now()
			go func() {
				_ = h.write(func(fr *http2.Framer) error {
					return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:1]})
				})
				for i := 1; i < len(block); i++ {
					time.Sleep(trickle)
					last := i == len(block)-1
					if h.write(func(fr *http2.Framer) error {
						return fr.WriteContinuation(1, last, block[i:i+1])
					}) != nil {
						return
					}
				}
			}()
			select {
			case <-h.closed:
				var err error
				if n := h.count(func(f frameSeen) bool { return f.status != "" }); n > 0 {
					err = fmt.Errorf("the server answered %d trickled requests", n)
				}
				http2Results.add(time.Since(start), err)
			case <-time.After(idleTimeout + time.Second + slack):
				http2Results.add(0, fmt.Errorf("the server had not closed the connection after %s",
					idleTimeout+time.Second+slack))
			}
		})
	}
	wg.Wait()

	steady.finish(t)
	http1.check(t, "HTTP/1.1 headers trickled", headerTimeout-50*time.Millisecond, headerTimeout+slack)
	http2Results.check(t, "HTTP/2 header block trickled", idleTimeout-50*time.Millisecond,
		idleTimeout+time.Second+slack)
	memory.check(t, 32*mib)
}

func TestStalledHandshakesAreCutAndTheCapHolds(t *testing.T) {
	const connectionCap, handshakeTimeout = 24, 500 * time.Millisecond
	srv := servertest.Start(t,
		server.WithMaxConnections(connectionCap),
		server.WithHandshakeTimeout(handshakeTimeout),
		server.WithMetricsAddr("127.0.0.1:0"),
	)
	steady := startSteadyCaller(t, srv)
	memory := watchMemory(t)
	stopSampling := make(chan struct{})
	peakOpen := sampleMetric(t, srv, "echoloop_connections_open", stopSampling)

	// Attackers reconnect as soon as they are cut, for three seconds: half
	// send nothing, half the start of a ClientHello that never ends.
	const attackers, attackFor = 32, 3 * time.Second
	var results attackResults
	var wg sync.WaitGroup
	end := time.Now().Add(attackFor)
	for i := range attackers {
		wg.Go(func() {
			for time.Now().Before(end) {
				conn, err := net.Dial("tcp", srv.Addr)
				if err != nil {
					results.add(0, err)
					return
				}
				if i%2 == 1 {
					// A handshake record announcing 512 bytes, and 3 of them.
					_, _ = conn.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01})
				}
				// Waiting in the accept queue behind the cap counts too.
				results.add(closedAfter(conn, attackers/connectionCap*handshakeTimeout+10*slack))
				conn.Close()
			}
		})
	}
	wg.Wait()
	close(stopSampling)

	steady.finish(t)
	results.check(t, "stalled handshakes", handshakeTimeout-50*time.Millisecond, 10*slack)
	if peak := <-peakOpen; peak > connectionCap || peak < connectionCap/2 {
		t.Errorf("at most %g connections were open at once, want the cap of %d reached and held", peak, connectionCap)
	}
	// Every attacker the server cut was cut by the handshake timeout.
	srv.WaitForRefusals(t, server.ReasonTimeout, results.count)
	memory.check(t, 32*mib)
}

func TestHTTP2RapidResetIsAbsorbed(t *testing.T) {
	const maxStreams = 100
	srv := servertest.Start(t,
		server.WithMaxConcurrentStreams(maxStreams),
		server.WithMetricsAddr("127.0.0.1:0"),
		// Logged as in production, but not kept: the test server's own
		// log buffer would hold a line per reset call and weigh on the heap
		// this test measures.
		server.WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil))), //nolint:sloglint // encoding each line is part of the cost under attack
	)
	steady := startSteadyCaller(t, srv)
	memory := watchMemory(t)
	stopSampling := make(chan struct{})
	peakInFlight := sampleMetric(t, srv, "echoloop_calls_in_flight", stopSampling)

	// Two connections, each opening streams and cancelling each one at
	// once (CVE-2023-44487), in bursts of 100 pairs: 10,000 pairs each, or
	// as many as two seconds allow.
	const connections, pairs, attackFor, burst = 2, 10000, 2 * time.Second, 100
	var wg sync.WaitGroup
	attacks := make([]*rawH2, connections)
	opened := make([]int, connections)
	end := time.Now().Add(attackFor)
	for c := range connections {
		h := mustDialH2(t, srv)
		attacks[c] = h
		wg.Go(func() {
			block := h.headerBlock("/echo.v1.EchoService/Echo", "application/grpc")
			for id := uint32(1); opened[c] < pairs && time.Now().Before(end); {
				err := h.write(func(fr *http2.Framer) error {
					for range burst {
						if err := fr.WriteHeaders(http2.HeadersFrameParam{
							StreamID: id, BlockFragment: block, EndHeaders: true,
						}); err != nil {
							return err
						}
						if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
							return err
						}
						id += 2
						opened[c]++
					}
					return nil
				})
				if err != nil {
					return // the server closed the connection on the attacker
				}
			}
		})
	}
	wg.Wait()

	// Each attacking connection is either sent away by the server (x/net
	// answers too many early resets with GOAWAY ENHANCE_YOUR_CALM) or has
	// been dealt with up to its last reset.
	for c, h := range attacks {
		// Generous: under the race detector, with other tests running,
		// the server works through a few thousand resets a second.
		caughtUp := h.caughtUp(time.Minute)
		code, goAway := h.goAway()
		if goAway {
			h.waitClosed(t, slack)
		} else if !caughtUp {
			t.Errorf("attacking connection %d: the server neither closed it nor caught up with it", c)
		}
		t.Logf("attacking connection %d: %d streams opened and reset; GOAWAY %v (%v), caught up %v; "+
			"%d reset by the server, %d answered", c, opened[c], goAway, code, caughtUp,
			h.count(func(f frameSeen) bool { return f.kind == http2.FrameRSTStream }),
			h.count(func(f frameSeen) bool { return f.status != "" }))
	}
	waitFor(t, "the attack's calls have ended", func() bool {
		return scrapeMetric(t, srv, "echoloop_calls_in_flight") <= float64(len(shapes))
	})
	close(stopSampling)
	steady.finish(t)
	// x/net runs at most MaxConcurrentStreams handlers per connection, plus
	// one call per protocol from the well-behaved client.
	if peak := <-peakInFlight; peak > connections*maxStreams+float64(len(shapes)) {
		t.Errorf("%g calls were in flight at once, more than %d connections of %d streams allow",
			peak, connections, maxStreams)
	}
	memory.check(t, 64*mib)
}

func TestStreamFloodStopsAtTheStreamLimit(t *testing.T) {
	const maxStreams, opened = 10, 50
	srv := servertest.Start(t, server.WithMaxConcurrentStreams(maxStreams), server.WithMetricsAddr("127.0.0.1:0"))
	steady := startSteadyCaller(t, srv)
	memory := watchMemory(t)

	// Fifty calls opened at once on one connection, none sending its
	// request, so each that is admitted holds a handler.
	h := mustDialH2(t, srv)
	block := h.headerBlock("/echo.v1.EchoService/Echo", "application/grpc")
	if err := h.write(func(fr *http2.Framer) error {
		for i := range opened {
			err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block, EndHeaders: true})
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	reset := func(f frameSeen) bool { return f.kind == http2.FrameRSTStream }
	waitFor(t, "the streams past the limit are reset", func() bool { return h.count(reset) >= opened-maxStreams })
	waitFor(t, "the admitted streams are in flight", func() bool {
		return scrapeMetric(t, srv, "echoloop_calls_in_flight") >= maxStreams
	})
	time.Sleep(time.Second) // the well-behaved client calls while the flood holds its streams

	if n := h.count(reset); n != opened-maxStreams {
		t.Errorf("%d streams reset, want the %d past the limit of %d", n, opened-maxStreams, maxStreams)
	}
	admitted := h.count(func(f frameSeen) bool { return reset(f) && f.stream <= 2*maxStreams-1 })
	if admitted != 0 {
		t.Errorf("%d of the first %d streams were reset, though they were within the limit", admitted, maxStreams)
	}
	if code, ok := h.goAway(); ok {
		t.Errorf("the server closed the flooding connection (%v) rather than refusing the extra streams", code)
	}
	h.conn.Close()

	steady.finish(t)
	waitFor(t, "the flood's handlers have ended", func() bool {
		return scrapeMetric(t, srv, "echoloop_calls_in_flight") == 0
	})
	memory.check(t, 32*mib)
}

func TestOversizedInputsAreRefused(t *testing.T) {
	const maxHeader, maxMessage = 8 << 10, 64 << 10
	srv := servertest.Start(t, server.WithMaxHeaderBytes(maxHeader), server.WithMaxMessageBytes(maxMessage))
	steady := startSteadyCaller(t, srv)
	memory := watchMemory(t)
	h2client := mtlsHTTPClient(t, srv)
	h1client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      srv.CA.Pool(),
		Certificates: []tls.Certificate{srv.Client.TLSCertificate()},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"http/1.1"},
	}}}
	t.Cleanup(h1client.CloseIdleConnections)
	bigHeader := strings.Repeat("h", 4*maxHeader)

	for _, shape := range shapes {
		t.Run(shape.protocol+"/headers over HTTP/1.1", func(t *testing.T) {
			req, _ := http.NewRequestWithContext(callContext(t), http.MethodPost, srv.URL+shape.path, nil)
			req.Header.Set("Content-Type", shape.contentType)
			req.Header.Set("X-Pad", bigHeader)
			resp, err := h1client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Proto != "HTTP/1.1" {
				t.Errorf("answered %s %d, want HTTP/1.1 431", resp.Proto, resp.StatusCode)
			}
		})

		t.Run(shape.protocol+"/headers over HTTP/2", func(t *testing.T) {
			// Go's HTTP/2 client refuses to send headers past the limit the
			// server advertises, so these are written as frames. Just over
			// the limit, the call gets a 431 and the connection lives on.
			h := mustDialH2(t, srv)
			if err := h.writeHeaderBlock(1, h.headerBlock(shape.path, shape.contentType,
				padHeaders(3*maxHeader/2)...), true); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "an answer to the oversized headers", func() bool {
				return h.count(func(f frameSeen) bool { return f.stream == 1 && f.status != "" }) > 0
			})
			if n := h.count(func(f frameSeen) bool { return f.stream == 1 && f.status == "431" }); n != 1 {
				t.Errorf("no 431 answer on HTTP/2")
			}
			if code, ok := h.goAway(); ok {
				t.Errorf("the server closed the connection (%v) over one call's headers", code)
			}
		})

		t.Run(shape.protocol+"/header flood over HTTP/2", func(t *testing.T) {
			// Far over the limit, in many headers or in one: x/net stops
			// decoding and closes the connection (CVE-2023-45288).
			for _, extra := range [][]string{padHeaders(8 * maxHeader), {"x-pad", bigHeader}} {
				h := mustDialH2(t, srv)
				if err := h.writeHeaderBlock(1, h.headerBlock(shape.path, shape.contentType, extra...), true); err != nil {
					t.Fatal(err)
				}
				h.waitClosed(t, slack)
				code, ok := h.goAway()
				if !ok || (code != http2.ErrCodeProtocol && code != http2.ErrCodeCompression) {
					t.Errorf("GOAWAY %v (sent %v), want PROTOCOL_ERROR or COMPRESSION_ERROR", code, ok)
				}
				if n := h.count(func(f frameSeen) bool { return f.status != "" }); n != 0 {
					t.Errorf("the server answered the header flood %d times", n)
				}
			}
		})

		t.Run(shape.protocol+"/frame over HTTP/2", func(t *testing.T) {
			// A DATA frame past the frame size the server's SETTINGS allow
			// is a connection error (RFC 9113 section 4.2).
			h := mustDialH2(t, srv)
			if err := h.writeHeaderBlock(1, h.headerBlock(shape.path, shape.contentType), false); err != nil {
				t.Fatal(err)
			}
			oversized := make([]byte, h.maxFrame.Load()+1)
			if err := h.write(func(fr *http2.Framer) error { return fr.WriteData(1, true, oversized) }); err != nil {
				t.Fatal(err)
			}
			h.waitClosed(t, slack)
			if code, ok := h.goAway(); !ok || code != http2.ErrCodeFrameSize {
				t.Errorf("GOAWAY %v (sent %v), want FRAME_SIZE_ERROR", code, ok)
			}
		})

		// Unary Connect and the plain route carry one bare message, no
		// envelope: the message case below covers them.
		t.Run(shape.protocol+"/envelope", func(t *testing.T) {
			if shape.protocol == "connect" || shape.protocol == "http" {
				return
			}
			// A length prefix of 1 GiB with nothing after it: refused on the
			// prefix alone, while the client still holds the stream open.
			body, writer := io.Pipe()
			defer writer.Close()
			go func() { _, _ = writer.Write([]byte{0, 0x40, 0, 0, 0}) }()
			req, _ := http.NewRequestWithContext(callContext(t), http.MethodPost, srv.URL+shape.path, body)
			req.Header.Set("Content-Type", shape.contentType)
			resp, err := h2client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if !resourceExhausted(resp, answer) {
				t.Errorf("answered %d %q (trailers %v), want resource_exhausted", resp.StatusCode, answer, resp.Trailer)
			}
		})

		for _, sending := range []struct {
			name     string
			size     int
			declared bool
			client   *http.Client
		}{
			{"message", 1024 * maxMessage, false, h2client},
			{"message of declared length", 1024 * maxMessage, true, h2client},
			{"message of declared length just over", 2 * maxMessage, true, h2client},
			{"message of declared length just over, HTTP/1.1", 2 * maxMessage, true, h1client},
		} {
			declared := sending.declared
			t.Run(shape.protocol+"/"+sending.name, func(t *testing.T) {
				// 64 MiB, sent as the server reads it: the server must refuse
				// it at the limit rather than take it all in. Declared, it is
				// far past what the server reads of a refused body to let the
				// client see the answer; just over, the server reads the rest
				// and drops it, and answers in the protocol's own format all
				// the same (for gRPC, trailers at the end of the stream).
				body := oversizedMessage(shape, sending.size)
				req, _ := http.NewRequestWithContext(callContext(t), http.MethodPost, srv.URL+shape.path, body)
				req.Header.Set("Content-Type", shape.contentType)
				if declared {
					req.ContentLength = body.size
				}
				start := time.Now()
				resp, err := sending.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				// The server reads what is left of a refused body for at most
				// 5 s; a client that stops sending must not be kept that long.
				if took := time.Since(start); took >= 5*time.Second {
					t.Errorf("the answer took %s: the server waited out its drain", took)
				}
				if !resourceExhausted(resp, answer) {
					t.Errorf("answered %d %q (trailers %v), want resource_exhausted", resp.StatusCode, answer, resp.Trailer)
				}
				// What the client may send before the server has read anything:
				// the message limit and one stream's flow control window, 1 MiB.
				if body.sent > maxMessage+2*mib {
					t.Errorf("%d bytes of a message limited to %d were taken in", body.sent, maxMessage)
				}
			})
		}
	}

	steady.finish(t)
	// A server that buffered one of those messages whole would need 64 MiB.
	memory.check(t, 24*mib)
}

// padHeaders is header names and values adding up to about size bytes.
func padHeaders(size int) []string {
	var fields []string
	for i := 0; i < size; i += 512 {
		fields = append(fields, fmt.Sprintf("x-pad-%d", i/512), strings.Repeat("p", 500))
	}
	return fields
}

// streamedBody yields a prefix, then n filler bytes, then a suffix,
// without ever holding the filler, and counts what was read of it.
type streamedBody struct {
	parts io.Reader
	size  int64 // prefix, filler and suffix
	sent  int64
}

func (b *streamedBody) Read(p []byte) (int, error) {
	n, err := b.parts.Read(p)
	b.sent += int64(n)
	return n, err
}

type filler struct{}

func (filler) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// oversizedMessage is one request message of size bytes in the protocol's
// own framing: an enveloped protobuf for gRPC and gRPC-Web, a bare one for
// Connect, JSON for the plain route.
func oversizedMessage(shape rpcShape, size int) *streamedBody {
	var prefix, suffix []byte
	switch shape.protocol {
	case "http":
		prefix, suffix = []byte(`{"message":"`), []byte(`"}`)
	default:
		// Field 1, length-delimited, then the length as a varint.
		prefix = binary.AppendUvarint([]byte{0x0a}, uint64(size))
		if shape.protocol != "connect" {
			envelope := []byte{0, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(envelope[1:], uint32(len(prefix)+size))
			prefix = append(envelope, prefix...)
		}
	}
	return &streamedBody{
		parts: io.MultiReader(bytes.NewReader(prefix), io.LimitReader(filler{}, int64(size)), bytes.NewReader(suffix)),
		size:  int64(len(prefix) + size + len(suffix)),
	}
}

// resourceExhausted reads the answer the way each protocol carries its
// error: gRPC status 8 in the headers, trailers or gRPC-Web's trailer frame,
// or resource_exhausted (HTTP 429) from Connect and the plain route.
func resourceExhausted(resp *http.Response, body []byte) bool {
	for _, status := range []string{resp.Header.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Status")} {
		if status == "8" {
			return true
		}
	}
	return bytes.Contains(body, []byte("grpc-status:8")) ||
		(resp.StatusCode == http.StatusTooManyRequests &&
			(bytes.Contains(body, []byte("resource_exhausted")) || bytes.Contains(body, []byte(`"code":8`))))
}

func TestAuthenticatedClientsThatNeverAskAreClosed(t *testing.T) {
	const headerTimeout, idleTimeout = 500 * time.Millisecond, time.Second
	// x/net's HTTP/2 server waits a fixed ten seconds for the connection
	// preface; it has no setting.
	const prefaceTimeout = 10 * time.Second
	srv := servertest.Start(t, server.WithReadHeaderTimeout(headerTimeout), server.WithIdleTimeout(idleTimeout))
	steady := startSteadyCaller(t, srv)
	memory := watchMemory(t)

	const each = 30
	var http1, h2NoPreface, h2Silent attackResults
	var wg sync.WaitGroup
	for range each {
		wg.Go(func() {
			conn, err := dialTLS(srv, "http/1.1")
			if err != nil {
				http1.add(0, err)
				return
			}
			defer conn.Close()
			http1.add(closedAfter(conn, headerTimeout+slack))
		})
		wg.Go(func() {
			conn, err := dialTLS(srv, http2.NextProtoTLS)
			if err != nil {
				h2NoPreface.add(0, err)
				return
			}
			defer conn.Close()
			h2NoPreface.add(closedAfter(conn, prefaceTimeout+slack))
		})
		wg.Go(func() {
			h, err := dialH2(srv)
			if err != nil {
				h2Silent.add(0, err)
				return
			}
			defer h.conn.Close()
			start := time.Now()
			select {
			case <-h.closed:
				h2Silent.add(time.Since(start), nil)
			case <-time.After(idleTimeout + time.Second + slack):
				h2Silent.add(0, fmt.Errorf("the server had not closed the connection after %s",
					idleTimeout+time.Second+slack))
			}
		})
	}
	wg.Wait()

	steady.finish(t)
	http1.check(t, "HTTP/1.1, no request", headerTimeout-50*time.Millisecond, headerTimeout+slack)
	h2NoPreface.check(t, "HTTP/2, no preface", prefaceTimeout-50*time.Millisecond, prefaceTimeout+slack)
	h2Silent.check(t, "HTTP/2, preface and nothing else", idleTimeout-50*time.Millisecond,
		idleTimeout+time.Second+slack)
	memory.check(t, 32*mib)
}
