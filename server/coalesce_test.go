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

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
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

	var want bytes.Buffer
	for i := range 200 {
		chunk := fmt.Appendf(nil, "frame %03d;", i)
		want.Write(chunk)
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
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
	// 200 writes, each taking a fraction of a write system call's time,
	// go out in a handful of batches; one write each would be 200, and
	// the close_notify alert at the end is one more.
	if writes := counted.writes.Load() - before; writes > 50 {
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
