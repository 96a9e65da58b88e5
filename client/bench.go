package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// BenchConfig describes one benchmark of Echo over one protocol.
type BenchConfig struct {
	// Protocol carries the calls.
	Protocol Protocol
	// Connections is how many connections share the calls, each with a
	// pool of its own; the workers of the load take them round robin.
	// Default 1. Over HTTP/1.1 a connection carries one call at a time,
	// so each pool opens as many as it has calls in flight.
	Connections int
	// MessageSize is the length in bytes of the message echoed.
	MessageSize int
	// NewConnectionPerCall makes every call on a connection of its own,
	// handshake included, closed after the answer: a benchmark of
	// handshakes. Connections is then ignored.
	NewConnectionPerCall bool
	// Resume, with NewConnectionPerCall, keeps the session tickets the
	// server sends and resumes TLS sessions with them, as a client with a
	// session cache does; without it every handshake is a full one.
	Resume bool
	// CallTimeout is the deadline of each call; none when zero.
	CallTimeout time.Duration
	// Load is how hard and for how long to call.
	Load Load
}

// BenchResult is what [Client.Bench] measured.
type BenchResult struct {
	*LoadResult
	// Protocol is the protocol the calls used.
	Protocol Protocol
	// Connections is how many connections were opened before the
	// measured calls, to carry them (none for NewConnectionPerCall).
	Connections int
	// Handshakes counts the TLS handshakes made during the measured
	// calls, and Resumed those of them that resumed a session.
	Handshakes int64
	Resumed    int64
}

func (cfg BenchConfig) validate() error {
	var problems []error
	if _, err := ParseProtocol(string(cfg.Protocol)); err != nil {
		problems = append(problems, err)
	}
	if cfg.Connections < 0 {
		problems = append(problems, fmt.Errorf("connections must be positive, got %d", cfg.Connections))
	}
	if cfg.MessageSize < 0 {
		problems = append(problems, fmt.Errorf("message size must not be negative, got %d", cfg.MessageSize))
	}
	if cfg.Resume && !cfg.NewConnectionPerCall {
		problems = append(problems, errors.New("resuming sessions needs a new connection per call: "+
			"a kept connection has nothing to resume"))
	}
	if cfg.CallTimeout < 0 {
		problems = append(problems, fmt.Errorf("call timeout must not be negative, got %s", cfg.CallTimeout))
	}
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return cfg.Load.validate()
}

// Bench calls Echo as cfg describes and measures it. Before the measured
// calls it makes one call on each connection, which opens it and proves
// that the server accepts this client: when that call fails, Bench returns
// its error, explained as [Client.Call] explains it, and measures nothing.
// A call that fails later is counted by its code and the load goes on; an
// answer whose message is not the one sent counts as data_loss.
func (c *Client) Bench(ctx context.Context, cfg BenchConfig) (*BenchResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	// The TLS stack reports each handshake, full or resumed, to this hook
	// on the client side too; counting there needs no dialler of our own.
	var handshakes, resumed atomic.Int64
	config := c.tls.Clone()
	config.VerifyConnection = func(state tls.ConnectionState) error {
		handshakes.Add(1)
		if state.DidResume {
			resumed.Add(1)
		}
		return nil
	}
	if cfg.Resume {
		config.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}

	// A new connection per call gets a pool of its own per call: pools
	// that share calls race their dials and drop the spare connections,
	// which would count handshakes that carried no call.
	newConn := func() (*benchConn, error) {
		hc, err := c.newPool(config.Clone(), !cfg.NewConnectionPerCall)
		if err != nil {
			return nil, err
		}
		return &benchConn{c: c, hc: hc, protocol: cfg.Protocol, rpc: c.rpc(hc, cfg.Protocol)}, nil
	}
	pools := max(cfg.Connections, 1)
	if cfg.NewConnectionPerCall {
		pools = 1 // for the first call only
	}
	conns := make([]*benchConn, pools)
	for i := range conns {
		conn, err := newConn()
		if err != nil {
			return nil, err
		}
		defer conn.hc.CloseIdleConnections()
		conns[i] = conn
	}

	req := &echov1.EchoRequest{Message: strings.Repeat("x", cfg.MessageSize)}
	call := func(ctx context.Context, conn *benchConn) error {
		if cfg.CallTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, cfg.CallTimeout)
			defer cancel()
		}
		resp, err := conn.echo(ctx, req)
		if err == nil && resp.GetMessage() != req.GetMessage() {
			err = connect.NewError(connect.CodeDataLoss,
				fmt.Errorf("the server answered with a message of %d bytes, not the %d sent",
					len(resp.GetMessage()), len(req.GetMessage())))
		}
		return err
	}

	for _, conn := range conns {
		if err := call(ctx, conn); err != nil {
			return nil, err
		}
	}
	opened := int(handshakes.Load())
	if cfg.NewConnectionPerCall {
		opened = 0
	}
	handshakes.Store(0)
	resumed.Store(0)

	result, err := cfg.Load.Run(ctx, func(ctx context.Context, worker int) error {
		if !cfg.NewConnectionPerCall {
			return call(ctx, conns[worker%len(conns)])
		}
		conn, err := newConn()
		if err != nil {
			return err
		}
		defer conn.hc.CloseIdleConnections()
		return call(ctx, conn)
	})
	if result == nil {
		return nil, err
	}
	return &BenchResult{
		LoadResult:  result,
		Protocol:    cfg.Protocol,
		Connections: opened,
		Handshakes:  handshakes.Load(),
		Resumed:     resumed.Load(),
	}, err
}

// benchConn is one connection pool of a benchmark, with the generated
// client built once rather than per call.
type benchConn struct {
	c        *Client
	hc       *http.Client
	protocol Protocol
	rpc      echov1connect.EchoServiceClient
}

func (b *benchConn) echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	if b.protocol == HTTP {
		resp, err := b.c.postJSON(ctx, b.hc, req)
		if err != nil {
			return nil, b.c.explain(ctx, err)
		}
		return resp, nil
	}
	answer, err := b.rpc.Echo(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, b.c.explain(ctx, err)
	}
	return answer.Msg, nil
}
