package server_test

// What the abuse tests are built from: a well-behaved client that keeps
// calling while an attack runs, a watch on the process's memory and
// goroutines, raw TLS connections, and raw HTTP/2 written frame by frame
// with golang.org/x/net/http2's Framer, for the requests no real client
// sends.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/server/servertest"
)

// steadyCaller is a well-behaved mTLS client: one worker per protocol,
// each calling Echo every few milliseconds and opening a fresh connection
// (so a fresh handshake) every 25 calls, until finish. Every answer must
// name the test client and nobody else.
//
// Not more often: a closed client connection stays reachable from
// net/http's and x/net's idle timers for 90 seconds, and a caller that
// churned through connections would fill the heap the attack is measured
// by.
type steadyCaller struct {
	calls, failures atomic.Int64
	slowest         atomic.Int64 // nanoseconds
	mu              sync.Mutex
	firstFailure    error
	stop            chan struct{}
	done            sync.WaitGroup
}

func startSteadyCaller(t *testing.T, srv *servertest.Server) *steadyCaller {
	t.Helper()
	s := &steadyCaller{stop: make(chan struct{})}
	for _, p := range client.Protocols() {
		s.done.Go(func() {
			for {
				c, err := client.New(srv.URL, client.WithRootCAs(srv.CA.Pool()),
					client.WithCertificate(srv.Client.TLSCertificate()))
				if err != nil {
					s.fail(err)
					return
				}
				for range 25 {
					select {
					case <-s.stop:
						c.Close()
						return
					case <-time.After(20 * time.Millisecond):
					}
					s.call(c, p)
				}
				c.Close()
			}
		})
	}
	// The caller must be seen working before the attack starts, or its
	// success during the attack would prove nothing.
	deadline := time.Now().Add(10 * time.Second)
	for s.calls.Load() < 8 {
		if time.Now().After(deadline) || s.failures.Load() > 0 {
			t.Fatalf("the well-behaved client did not get going: %d calls, first failure %v",
				s.calls.Load(), s.firstFailure)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func (s *steadyCaller) call(c *client.Client, p client.Protocol) {
	// Generous: a call may wait in the accept queue behind an attack for
	// up to the handshake timeout, which is the point of the cap.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := c.Echo(ctx, p, "steady")
	elapsed := time.Since(start)
	s.calls.Add(1)
	for {
		old := s.slowest.Load()
		if int64(elapsed) <= old || s.slowest.CompareAndSwap(old, int64(elapsed)) {
			break
		}
	}
	switch {
	case err != nil:
		s.fail(fmt.Errorf("%s: %w", p, err))
	case resp.GetPeer().GetCommonName() != "client" || resp.GetMessage() != "steady":
		s.fail(fmt.Errorf("%s: answered for %q with %q", p, resp.GetPeer().GetCommonName(), resp.GetMessage()))
	}
}

func (s *steadyCaller) fail(err error) {
	s.failures.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstFailure == nil {
		s.firstFailure = err
	}
}

// finish stops the caller and fails the test unless every call it made
// while the attack ran succeeded, and it made enough of them to count.
func (s *steadyCaller) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	s.done.Wait()
	t.Logf("well-behaved client: %d calls, %d failed, slowest %s",
		s.calls.Load(), s.failures.Load(), time.Duration(s.slowest.Load()).Round(time.Millisecond))
	if s.failures.Load() > 0 {
		t.Errorf("the well-behaved client failed %d of %d calls during the attack; first: %v",
			s.failures.Load(), s.calls.Load(), s.firstFailure)
	}
	if s.calls.Load() < 20 {
		t.Errorf("the well-behaved client made only %d calls during the attack", s.calls.Load())
	}
}

// memoryWatch samples the live heap, as the last garbage collection
// measured it, while an attack runs. Attacker and server share the
// process, so the figures bound both together: the limits are set well
// below what the server would need if it buffered what it was sent or
// kept what it should have closed.
type memoryWatch struct {
	baseHeap       uint64
	baseGoroutines int
	peakHeap       atomic.Uint64
	stop, done     chan struct{}
}

// liveHeap is the heap the last collection found live.
func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

func watchMemory(t *testing.T) *memoryWatch {
	t.Helper()
	runtime.GC()
	w := &memoryWatch{
		baseHeap:       liveHeap(),
		baseGoroutines: runtime.NumGoroutine(),
		stop:           make(chan struct{}),
		done:           make(chan struct{}),
	}
	w.peakHeap.Store(w.baseHeap)
	go func() {
		defer close(w.done)
		ticker := time.NewTicker(10 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-ticker.C:
			}
			if live := liveHeap(); live > w.peakHeap.Load() {
				w.peakHeap.Store(live)
			}
		}
	}()
	return w
}

// check stops sampling, fails the test when the live heap grew by more
// than limit at any collection, then waits for the goroutines the attack
// caused to end and the heap to come back within limit of where it
// started.
func (w *memoryWatch) check(t *testing.T, limit uint64) {
	t.Helper()
	close(w.stop)
	<-w.done
	const mib = 1 << 20
	peak := w.peakHeap.Load()
	if peak > w.baseHeap+limit {
		t.Errorf("the live heap peaked at %d MiB, %d MiB over the %d MiB before the attack (limit %d MiB)",
			peak/mib, (peak-w.baseHeap)/mib, w.baseHeap/mib, limit/mib)
	}

	// A few goroutines of the test's own clients and timers may linger.
	const slack = 25
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > w.baseGoroutines+slack && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > w.baseGoroutines+slack {
		t.Errorf("%d goroutines 10s after the attack, %d before: the server kept what it should have closed",
			n, w.baseGoroutines)
	}
	// Twice: objects pooled in a sync.Pool survive the first.
	runtime.GC()
	runtime.GC()
	after := liveHeap()
	if after > w.baseHeap+limit {
		t.Errorf("the live heap is %d MiB after the attack, %d MiB before", after/mib, w.baseHeap/mib)
	}
	t.Logf("live heap: %d MiB before, peak %d MiB, %d MiB after; goroutines %d before, %d after",
		w.baseHeap/mib, peak/mib, after/mib, w.baseGoroutines, runtime.NumGoroutine())
}

// dialTLS completes a TLS handshake with the test client certificate,
// offering the given ALPN protocols. It is safe to call from any goroutine;
// the caller closes the connection.
func dialTLS(srv *servertest.Server, alpn ...string) (*tls.Conn, error) {
	return tls.Dial("tcp", srv.Addr, &tls.Config{
		RootCAs:      srv.CA.Pool(),
		ServerName:   "localhost",
		NextProtos:   alpn,
		Certificates: []tls.Certificate{srv.Client.TLSCertificate()},
		MinVersion:   tls.VersionTLS13,
	})
}

// closedAfter reads from conn until the server closes it and returns how
// long that took, or an error if the server has not closed it after limit.
// Whatever the server sends before closing is discarded. It is safe to
// call from any goroutine.
func closedAfter(conn net.Conn, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, conn)
	elapsed := time.Since(start)
	var timeout interface{ Timeout() bool }
	if errors.As(err, &timeout) && timeout.Timeout() {
		return elapsed, fmt.Errorf("the server had not closed the connection after %s", limit)
	}
	return elapsed, nil
}

// frameSeen is what the test keeps of one frame the server sent.
type frameSeen struct {
	kind   http2.FrameType
	stream uint32
	code   http2.ErrCode // of RST_STREAM and GOAWAY
	status string        // :status of response headers
	ack    bool          // of SETTINGS and PING
}

// rawH2 is an HTTP/2 connection written frame by frame. A reader
// goroutine acknowledges the server's SETTINGS and PINGs, returns flow
// control credit for what it receives, and records every frame.
type rawH2 struct {
	conn *tls.Conn

	mu  sync.Mutex // one writer at a time
	bw  *bufio.Writer
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer // hpack output

	seenMu sync.Mutex
	seen   []frameSeen

	maxFrame atomic.Uint32 // the frame size the server's SETTINGS allow

	settled chan struct{} // the server's SETTINGS arrived and were acknowledged
	closed  chan struct{} // the server closed the connection
}

// dialH2 opens an HTTP/2 connection: TLS with ALPN h2, the client
// preface and SETTINGS, and the server's SETTINGS acknowledged. It is safe
// to call from any goroutine; the caller closes h.conn.
func dialH2(srv *servertest.Server) (*rawH2, error) {
	conn, err := dialTLS(srv, http2.NextProtoTLS)
	if err != nil {
		return nil, err
	}
	h := &rawH2{conn: conn, settled: make(chan struct{}), closed: make(chan struct{})}
	h.bw = bufio.NewWriterSize(conn, 64<<10)
	h.fr = http2.NewFramer(h.bw, conn)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.buf)
	h.maxFrame.Store(16 << 10) // RFC 9113's default until SETTINGS say otherwise

	err = h.write(func(fr *http2.Framer) error {
		if _, err := h.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		return fr.WriteSettings()
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	go h.readLoop()
	select {
	case <-h.settled:
		return h, nil
	case <-h.closed:
		err = errors.New("the server closed the HTTP/2 connection before its SETTINGS")
	case <-time.After(10 * time.Second):
		err = errors.New("no SETTINGS from the server")
	}
	conn.Close()
	return nil, err
}

// mustDialH2 is [dialH2] for the test's own goroutine.
func mustDialH2(t *testing.T, srv *servertest.Server) *rawH2 {
	t.Helper()
	h, err := dialH2(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.conn.Close() })
	return h
}

// write runs frame writes under the writer lock and flushes them. An error
// is returned, not reported: the server may close the connection mid-attack.
func (h *rawH2) write(frames func(*http2.Framer) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := frames(h.fr)
	if err == nil {
		err = h.bw.Flush()
	}
	return err
}

// headerBlock encodes request headers for path and content type, plus any
// extra name and value pairs.
func (h *rawH2) headerBlock(path, contentType string, extra ...string) []byte {
	h.buf.Reset()
	fields := []string{
		":method", "POST", ":scheme", "https", ":authority", "localhost", ":path", path,
		"content-type", contentType, "te", "trailers",
	}
	fields = append(fields, extra...)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(h.buf.Bytes())
}

// writeHeaderBlock sends a header block on a new stream as one HEADERS
// frame and as many CONTINUATION frames as the 16 KiB minimum frame size
// needs.
func (h *rawH2) writeHeaderBlock(stream uint32, block []byte, endStream bool) error {
	const frameMax = 16 << 10
	return h.write(func(fr *http2.Framer) error {
		first := block[:min(len(block), frameMax)]
		if err := fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: stream, BlockFragment: first, EndStream: endStream, EndHeaders: len(first) == len(block),
		}); err != nil {
			return err
		}
		for rest := block[len(first):]; len(rest) > 0; {
			n := min(len(rest), frameMax)
			if err := fr.WriteContinuation(stream, n == len(rest), rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
}

func (h *rawH2) readLoop() {
	defer close(h.closed)
	settledOnce := sync.OnceFunc(func() { close(h.settled) })
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return
		}
		seen := frameSeen{kind: f.Header().Type, stream: f.Header().StreamID}
		var reply func(*http2.Framer) error
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if size, ok := f.Value(http2.SettingMaxFrameSize); ok {
				h.maxFrame.Store(size)
			}
			if !f.IsAck() {
				reply = func(fr *http2.Framer) error { return fr.WriteSettingsAck() }
			}
		case *http2.PingFrame:
			seen.ack = f.IsAck()
			if !f.IsAck() {
				reply = func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) }
			}
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				reply = func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, n) }
			}
		case *http2.RSTStreamFrame:
			seen.code = f.ErrCode
		case *http2.GoAwayFrame:
			seen.code = f.ErrCode
		case *http2.MetaHeadersFrame:
			seen.status = f.PseudoValue("status")
		}
		h.seenMu.Lock()
		h.seen = append(h.seen, seen)
		h.seenMu.Unlock()
		if reply != nil {
			h.mu.Lock()
			if reply(h.fr) == nil {
				_ = h.bw.Flush()
			}
			h.mu.Unlock()
		}
		if seen.kind == http2.FrameSettings {
			settledOnce()
		}
	}
}

// count reports how many recorded frames match.
func (h *rawH2) count(match func(frameSeen) bool) int {
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	n := 0
	for _, f := range h.seen {
		if match(f) {
			n++
		}
	}
	return n
}

// caughtUp sends a PING and reports whether the server answers it within
// limit: the server reads frames in order, so by then it has dealt with
// every frame sent before.
func (h *rawH2) caughtUp(limit time.Duration) bool {
	pings := func() int { return h.count(func(f frameSeen) bool { return f.kind == http2.FramePing && f.ack }) }
	before := pings()
	if h.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'c', 'a', 'u', 'g', 'h', 't'}) }) != nil {
		return false
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if pings() > before {
			return true
		}
		select {
		case <-h.closed:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// goAway returns the GOAWAY the server sent, if it sent one.
func (h *rawH2) goAway() (http2.ErrCode, bool) {
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	for _, f := range h.seen {
		if f.kind == http2.FrameGoAway {
			return f.code, true
		}
	}
	return 0, false
}

// waitClosed waits up to limit for the server to close the connection.
func (h *rawH2) waitClosed(t *testing.T, limit time.Duration) {
	t.Helper()
	select {
	case <-h.closed:
	case <-time.After(limit):
		t.Fatalf("the server had not closed the HTTP/2 connection after %s", limit)
	}
}

// scrapeMetric reads one unlabelled series from the server's plain metrics
// address, or -1 when it is not there.
func scrapeMetric(t *testing.T, srv *servertest.Server, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + srv.Server.MetricsAddr() + "/metrics")
	if err != nil {
		t.Errorf("reading metrics: %v", err)
		return -1
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for scanner.Scan() {
		var value float64
		if _, err := fmt.Sscanf(scanner.Text(), name+" %g", &value); err == nil {
			return value
		}
	}
	return -1
}

// sampleMetric polls a series every 20 ms until stop is closed and returns
// the largest value seen.
func sampleMetric(t *testing.T, srv *servertest.Server, name string, stop <-chan struct{}) <-chan float64 {
	t.Helper()
	peak := make(chan float64, 1)
	go func() {
		highest := -1.0
		for {
			if v := scrapeMetric(t, srv, name); v > highest {
				highest = v
			}
			select {
			case <-stop:
				peak <- highest
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return peak
}
