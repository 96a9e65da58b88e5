package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/pki"
)

// sample is one measured interval of load on one server: what the load
// generator saw and what the server process said it spent.
type sample struct {
	calls      int64
	errors     map[string]int64
	perSecond  float64
	p50, p90   time.Duration
	p99, max   time.Duration
	cpu        time.Duration // server CPU per call
	allocs     float64       // server allocations per call
	allocBytes float64       // server bytes allocated per call
	writes     float64       // server write system calls per call
	reads      float64       // server read system calls per call
	handshakes int64
	resumed    int64
	curve      tls.CurveID
}

// driver puts one interval of load on the server at addr.
type driver func(ctx context.Context, addr string) (*driven, error)

// driven is what a driver measured on the client side.
type driven struct {
	result     *client.LoadResult
	handshakes int64
	resumed    int64
	curve      tls.CurveID
}

// measure runs one interval of load with the server's counters read just
// before and just after it.
func measure(ctx context.Context, p *serverProc, drive driver) (sample, error) {
	before, err := p.stats()
	if err != nil {
		return sample{}, err
	}
	d, err := drive(ctx, p.addr)
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w", p.label, err)
	}
	after, err := p.stats()
	if err != nil {
		return sample{}, err
	}

	r := d.result
	if r.Calls == 0 {
		return sample{}, fmt.Errorf("%s: %w", p.label, errNoCalls)
	}
	n := float64(r.Calls)
	return sample{
		calls:      r.Calls,
		errors:     r.Errors,
		perSecond:  r.PerSecond(),
		p50:        r.Percentile(50),
		p90:        r.Percentile(90),
		p99:        r.Percentile(99),
		max:        r.Max(),
		cpu:        time.Duration(float64(after.CPU-before.CPU) / n),
		allocs:     float64(after.Mallocs-before.Mallocs) / n,
		allocBytes: float64(after.AllocBytes-before.AllocBytes) / n,
		writes:     float64(after.Writes-before.Writes) / n,
		reads:      float64(after.Reads-before.Reads) / n,
		handshakes: d.handshakes,
		resumed:    d.resumed,
		curve:      d.curve,
	}, nil
}

// newClient is an echoloop client with the suite's client certificate for
// the key set: the very client `echoloop bench` uses.
func newClient(addr string, keys keySet) (*client.Client, error) {
	return client.New("https://"+addr,
		client.WithCAFile(filepath.Join(keys.dir, pki.CACertFile)),
		client.WithCertificateFiles(filepath.Join(keys.dir, keys.clientCert), filepath.Join(keys.dir, keys.clientKey)),
	)
}

// echoloopClientDriver loads the server with echoloop's own client (connect-go
// underneath) over one protocol.
func echoloopClientDriver(cfg suiteConfig, keys keySet, p client.Protocol, duration time.Duration) driver {
	return func(ctx context.Context, addr string) (*driven, error) {
		c, err := newClient(addr, keys)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		result, err := c.Bench(ctx, client.BenchConfig{
			Protocol:    p,
			Connections: cfg.connections,
			MessageSize: cfg.messageSize,
			CallTimeout: callTimeout,
			Load:        client.Load{Concurrency: cfg.concurrency, Duration: duration},
		})
		if err != nil {
			return nil, err
		}
		return &driven{result: result.LoadResult}, nil
	}
}

// callTimeout is every call's deadline. It travels with the call
// (grpc-timeout), so servers do the work of a deadline as they do for real
// clients.
const callTimeout = 10 * time.Second

// grpcClientDriver loads the server with grpc-go's own client, closed loop
// or, with rate > 0, open loop.
func grpcClientDriver(cfg suiteConfig, keys keySet, duration time.Duration, rate float64, concurrency int) driver {
	return func(ctx context.Context, addr string) (*driven, error) {
		c, err := newClient(addr, keys)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		creds := credentials.NewTLS(c.TLSConfig())

		req := &echov1.EchoRequest{Message: message(cfg.messageSize)}
		invoke := func(ctx context.Context, conn *grpc.ClientConn) error {
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			resp := &echov1.EchoResponse{}
			err := conn.Invoke(ctx, echov1connect.EchoServiceEchoProcedure, req, resp)
			if err != nil {
				return connect.NewError(connect.Code(status.Code(err)), err)
			}
			if resp.GetMessage() != req.GetMessage() {
				return connect.NewError(connect.CodeDataLoss, errors.New("the answer carries another message"))
			}
			return nil
		}

		conns := make([]*grpc.ClientConn, cfg.connections)
		for i := range conns {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				return nil, fmt.Errorf("grpc-go client: %w", err)
			}
			defer conn.Close()
			if err := invoke(ctx, conn); err != nil {
				return nil, fmt.Errorf("first call: %w", err)
			}
			conns[i] = conn
		}
		load := client.Load{Concurrency: concurrency, Duration: duration, Rate: rate}
		result, err := load.Run(ctx, func(ctx context.Context, worker int) error {
			return invoke(ctx, conns[worker%len(conns)])
		})
		if err != nil {
			return nil, err
		}
		return &driven{result: result}, nil
	}
}

// handshakeDriver makes TLS handshakes and nothing else: dial, handshake
// with the client's certificate, read the server's first bytes (which, on
// TLS 1.3, come after the server has checked the client's certificate, and
// bring the session tickets with them), hang up. With resume, handshakes
// resume the session of an earlier one.
func handshakeDriver(cfg suiteConfig, keys keySet, duration time.Duration, resume bool) driver {
	return func(ctx context.Context, addr string) (*driven, error) {
		c, err := newClient(addr, keys)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		config := c.TLSConfig()
		config.NextProtos = []string{"h2"}
		if resume {
			config.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		}

		var handshakes, resumed atomic.Int64
		var curve atomic.Uint32
		dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: callTimeout}, Config: config}
		handshake := func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			conn, err := dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return connect.NewError(connect.CodeUnavailable, err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(callTimeout))
			var first [1]byte
			if _, err := io.ReadFull(conn, first[:]); err != nil {
				return connect.NewError(connect.CodeUnavailable, fmt.Errorf("reading the server's first bytes: %w", err))
			}
			state := conn.(*tls.Conn).ConnectionState()
			handshakes.Add(1)
			if state.DidResume {
				resumed.Add(1)
			}
			curve.Store(uint32(state.CurveID))
			return nil
		}

		// One handshake first: it proves the server takes the client and,
		// with resume, gives the measured ones a session to resume.
		if err := handshake(ctx); err != nil {
			return nil, fmt.Errorf("first handshake: %w", err)
		}
		handshakes.Store(0)
		resumed.Store(0)
		load := client.Load{Concurrency: cfg.handshakeConcurrency, Duration: duration}
		result, err := load.Run(ctx, func(ctx context.Context, _ int) error { return handshake(ctx) })
		if err != nil {
			return nil, err
		}
		return &driven{result: result, handshakes: handshakes.Load(), resumed: resumed.Load(),
			curve: tls.CurveID(curve.Load())}, nil //nolint:gosec // G115: it holds a CurveID
	}
}

func message(size int) string {
	b := make([]byte, size)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}
