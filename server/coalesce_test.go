package server

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// countingConn counts the writes that reach the socket. While gate holds an
// open channel, a write waits for it to close: a socket whose buffer is full.
type countingConn struct {
	net.Conn
	writes atomic.Int64
	gate   atomic.Pointer[chan struct{}]
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	if gate := c.gate.Load(); gate != nil {
		<-*gate
	}
	return c.Conn.Write(p)
}

// tlsPair is a TLS connection over loopback TCP: the server's end, wrapped
// in a coalescingConn, and the client's end.
func tlsPair(t *testing.T) (*coalescingConn, *countingConn, *tls.Conn) {
	t.Helper()
	ca, err := pki.NewAuthority("coalesce test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	rawClient, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	clientConn := tls.Client(rawClient, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	raw, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	counted := &countingConn{Conn: raw}
	serverConn := tls.Server(counted, &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}})
	t.Cleanup(func() { clientConn.Close(); serverConn.Close() })

	handshook := make(chan error, 1)
	go func() { handshook <- serverConn.Handshake() }()
	if err := clientConn.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-handshook; err != nil {
		t.Fatal(err)
	}
	return newCoalescingConn(serverConn), counted, clientConn
}

func TestCoalescingConnWritesEverythingInOrderInFewerWrites(t *testing.T) {
	t.Parallel()
	conn, counted, peer := tlsPair(t)
	before := counted.writes.Load()

	// The socket takes nothing until all 200 writes are made, so the test
	// does not depend on how the scheduler interleaves the writer with them.
	gate := make(chan struct{})
	counted.gate.Store(&gate)

	var want bytes.Buffer
	for i := range 200 {
		chunk := fmt.Appendf(nil, "frame %03d;", i)
		want.Write(chunk)
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("the peer read %d bytes, not the %d written in order", len(got), want.Len())
	}
	// The first batch went out while the rest piled up behind it, then the
	// rest went out at once, then the close_notify alert. crypto/tls starts
	// a connection with records of about 1.2 kB and writes each on its own,
	// so the 2 kB of the second batch are two writes: five at most, where
	// writing each through would have made 201.
	if writes := counted.writes.Load() - before; writes > 5 {
		t.Errorf("%d writes reached the socket for 200 small writes; want them coalesced", writes)
	}
}

func TestCoalescingConnReportsAWriteError(t *testing.T) {
	t.Parallel()
	conn, _, peer := tlsPair(t)
	peer.Close()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := conn.Write(make([]byte, 32<<10)); err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("writes to a closed peer kept succeeding; want the socket's error")
}

func TestCoalescingConnRefusesWritesAfterClose(t *testing.T) {
	t.Parallel()
	conn, _, _ := tlsPair(t)
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("late")); err == nil {
		t.Error("Write after Close returned nil")
	}
}
