package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// idleResult is what idle connections cost one server.
type idleResult struct {
	server string
	points []idlePoint
}

// idlePoint is the cost per connection with conns of them open, each
// having made one call and then gone quiet, measured in the server after a
// garbage collection against the server before any was opened.
type idlePoint struct {
	conns      int
	goMemory   float64 // bytes of Go heap and stacks in use
	rss        float64 // bytes of resident memory
	goroutines float64
}

// idleKinds are the servers whose idle connections are counted: echoloop,
// and for scale the two it is most often weighed against.
var idleKinds = []string{kindEcholoop, kindGRPC, kindConnect}

func (run *suiteRun) idleSection(ctx context.Context) error {
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		return err
	}
	counts := slices.Clone(run.cfg.idle)
	slices.Sort(counts)
	if err := raiseFileLimit(counts[len(counts)-1]); err != nil {
		return err
	}
	for _, kind := range idleKinds {
		procs, stop, err := run.servers(keys, kind)
		if err != nil {
			return err
		}
		result, err := run.idle(ctx, procs[0], keys, counts)
		stop()
		if err != nil {
			return err
		}
		run.results.idle = append(run.results.idle, result)
	}
	return nil
}

// idle opens connections up to each count in turn and measures.
func (run *suiteRun) idle(ctx context.Context, p *serverProc, keys keySet, counts []int) (idleResult, error) {
	result := idleResult{server: p.label}
	c, err := newClient(p.addr, keys)
	if err != nil {
		return result, err
	}
	defer c.Close()
	config := c.TLSConfig()
	config.NextProtos = []string{http2.NextProtoTLS}

	base, err := p.memory()
	if err != nil {
		return result, err
	}
	var conns []*http2.ClientConn
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	for _, count := range counts {
		opened, err := openIdle(ctx, p.addr, config, len(conns), count-len(conns))
		conns = append(conns, opened...)
		if err != nil {
			return result, fmt.Errorf("%s: opening idle connection %d of %d: %w", p.label, len(conns)+1, count, err)
		}
		// Let the server's goroutines finish the calls' last steps.
		time.Sleep(500 * time.Millisecond)
		after, err := p.memory()
		if err != nil {
			return result, err
		}
		n := float64(count)
		point := idlePoint{
			conns:      count,
			goMemory:   (float64(after.HeapInuse+after.StackInuse) - float64(base.HeapInuse+base.StackInuse)) / n,
			rss:        (float64(after.RSS) - float64(base.RSS)) / n,
			goroutines: float64(after.Goroutines-base.Goroutines) / n,
		}
		result.points = append(result.points, point)
		run.logf("idle: %s with %d connections: %.1f KiB of Go heap and stacks, %.1f KiB resident, "+
			"%.2f goroutines per connection", p.label, count, point.goMemory/1024, point.rss/1024, point.goroutines)
	}
	return result, nil
}

// idleSources are the loopback addresses idle connections come from: one
// address has about 28,000 ephemeral ports, and the suite's earlier
// handshakes leave many of them in TIME_WAIT.
const idleSources = 8

// openIdle opens n connections, numbered from first, each making one
// gRPC call (which every server under test answers) before it goes quiet.
func openIdle(ctx context.Context, addr string, config *tls.Config, first, n int) ([]*http2.ClientConn, error) {
	transport := &http2.Transport{}
	req := &echov1.EchoRequest{Message: "idle"}
	open := func(i int) (*http2.ClientConn, error) {
		dialer := &tls.Dialer{
			NetDialer: &net.Dialer{
				Timeout:   callTimeout,
				LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%idleSources))}, //nolint:gosec // G115: below 2+idleSources
			},
			Config: config,
		}
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		cc, err := transport.NewClientConn(conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		rpc := echov1connect.NewEchoServiceClient(&http.Client{Transport: cc}, "https://"+addr, connect.WithGRPC())
		if _, err := rpc.Echo(ctx, connect.NewRequest(req)); err != nil {
			cc.Close()
			return nil, err
		}
		return cc, nil
	}

	var mu sync.Mutex
	var opened []*http2.ClientConn
	var firstErr error
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				cc, err := open(i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if cc != nil {
					opened = append(opened, cc)
				}
				mu.Unlock()
			}
		})
	}
	for i := first; i < first+n; i++ {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return opened, firstErr
}

// raiseFileLimit lifts this process's descriptor limit to the hard limit,
// and says what to do when even that is too low for conns connections.
// Server processes inherit the raised limit.
func raiseFileLimit(conns int) error {
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		return fmt.Errorf("reading the file descriptor limit: %w", err)
	}
	limit.Cur = limit.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		return fmt.Errorf("raising the file descriptor limit: %w", err)
	}
	// Each side of each connection holds a descriptor, in its own process,
	// plus a few hundred for everything else.
	if need := uint64(conns) + 512; limit.Max < need { //nolint:gosec // G115: conns is a positive count
		return fmt.Errorf("%d idle connections need about %d file descriptors in each process, "+
			"but the hard limit is %d: raise it (ulimit -Hn, or the container's nofile limit) or lower -idle",
			conns, need, limit.Max)
	}
	return nil
}
