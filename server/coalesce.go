package server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// The HTTP/2 server of x/net flushes its frames whenever its queue of
// frames runs dry, which on a busy connection is after nearly every
// answer: one TLS record and one write system call per call, where
// grpc-go's own transport writes many answers at once. On loopback and
// fast networks that system call is the largest single cost of a call.
//
// coalescingConn sits between the HTTP/2 server and the TLS connection
// and gathers what the server writes while a write is under way, or until
// the goroutines already runnable have had their turn, as grpc-go's
// writer does before it flushes a small batch. An answer is never held
// back waiting for another: with nothing else to run, the write happens at
// once.
type coalescingConn struct {
	*tls.Conn

	mu       sync.Mutex
	space    *sync.Cond    // signalled when pending is taken or the writer stops
	pending  []byte        // written by the server, not yet to the connection
	flushing bool          // a writer goroutine runs
	flushed  chan struct{} // closed when that writer stops
	err      error         // the first write error; every later write returns it
	closed   bool
}

// Bounds of a batch: below coalesceSmall the writer lets other goroutines
// run once before it writes; past coalesceMax a server write waits for the
// writer, so that a client that reads slowly holds back the server instead
// of growing a buffer.
const (
	coalesceSmall = 16 << 10
	coalesceMax   = 256 << 10
	// closeFlushTimeout bounds how long Close waits for the last frames,
	// a GOAWAY among them, to reach a client that has stopped reading.
	closeFlushTimeout = time.Second
)

var batchPool = sync.Pool{New: func() any { return make([]byte, 0, 4<<10) }}

func newCoalescingConn(c *tls.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c}
	cc.space = sync.NewCond(&cc.mu)
	return cc
}

// Write takes a copy of p to write soon, or reports the error an earlier
// write met.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) >= coalesceMax && c.err == nil && !c.closed {
		c.space.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, net.ErrClosed
	}
	if c.pending == nil {
		c.pending = batchPool.Get().([]byte)[:0]
	}
	c.pending = append(c.pending, p...)
	if !c.flushing {
		c.flushing = true
		c.flushed = make(chan struct{})
		go c.flush()
	}
	return len(p), nil
}

// flush writes batches until nothing is pending, then stops: an idle
// connection keeps no goroutine and no buffer for writing.
func (c *coalescingConn) flush() {
	yielded := false
	for {
		c.mu.Lock()
		if !yielded && len(c.pending) < coalesceSmall {
			c.mu.Unlock()
			runtime.Gosched()
			yielded = true
			continue
		}
		batch := c.pending
		if len(batch) == 0 || c.err != nil {
			c.pending = nil
			c.flushing = false
			close(c.flushed)
			c.space.Broadcast()
			c.mu.Unlock()
			if batch != nil {
				batchPool.Put(batch[:0]) //nolint:staticcheck // SA6002: a slice header per batch, next to the batch it saves
			}
			return
		}
		c.pending = nil
		c.space.Broadcast()
		c.mu.Unlock()

		_, err := c.Conn.Write(batch)
		if cap(batch) <= coalesceMax {
			batchPool.Put(batch[:0]) //nolint:staticcheck // SA6002: a slice header per batch, next to the batch it saves
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
		}
		yielded = false
	}
}

// Close writes what is pending, waiting at most closeFlushTimeout for it,
// then closes the TLS connection.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.closed = true
	flushing, flushed := c.flushing, c.flushed
	c.space.Broadcast()
	c.mu.Unlock()
	if flushing {
		timer := time.NewTimer(closeFlushTimeout)
		select {
		case <-flushed:
		case <-timer.C:
		}
		timer.Stop()
	}
	return c.Conn.Close()
}

// serveHTTP2 replaces x/net's hand-off of a negotiated h2 connection so
// that the HTTP/2 server writes through a coalescingConn; the rest is as
// http2.ConfigureServer does it. net/http passes the connection's base
// context, the one ConnContext made, through an unexported method on h.
func serveHTTP2(h2 *http2.Server) func(*http.Server, *tls.Conn, http.Handler) {
	return func(hs *http.Server, c *tls.Conn, h http.Handler) {
		opts := &http2.ServeConnOpts{Handler: h, BaseConfig: hs}
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			opts.Context = bc.BaseContext()
		}
		h2.ServeConn(newCoalescingConn(c), opts)
	}
}
