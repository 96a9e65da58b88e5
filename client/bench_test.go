package client_test

import (
	"context"
	"errors"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/server/servertest"
)

func TestBenchMakesEveryCallOnTheConnectionsItOpened(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))

	for _, p := range client.Protocols() {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			result, err := c.Bench(callContext(t), client.BenchConfig{
				Protocol:    p,
				Connections: 2,
				MessageSize: 100,
				Load:        client.Load{Concurrency: 4, Requests: 40},
			})
			if err != nil {
				t.Fatal(err)
			}
			if result.Calls != 40 || result.Errs() != 0 {
				t.Errorf("%d calls, %d failed (%v); want 40, none failed", result.Calls, result.Errs(), result.Errors)
			}
			if result.Connections != 2 || result.Handshakes != 0 {
				t.Errorf("%d connections opened before, %d handshakes during the calls; want 2 and 0",
					result.Connections, result.Handshakes)
			}
			if p50, max := result.Percentile(50), result.Max(); p50 <= 0 || max < p50 {
				t.Errorf("latency p50 %s, max %s; want 0 < p50 <= max", p50, max)
			}
		})
	}
}

func TestBenchWithANewConnectionPerCall(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))

	for _, resume := range []bool{false, true} {
		result, err := c.Bench(callContext(t), client.BenchConfig{
			Protocol:             client.GRPC,
			NewConnectionPerCall: true,
			Resume:               resume,
			Load:                 client.Load{Concurrency: 3, Requests: 12},
		})
		if err != nil {
			t.Fatal(err)
		}
		wantResumed := int64(0)
		if resume {
			wantResumed = 12
		}
		if result.Calls != 12 || result.Handshakes != 12 || result.Resumed != wantResumed {
			t.Errorf("resume %v: %d calls, %d handshakes, %d resumed; want 12, 12, %d",
				resume, result.Calls, result.Handshakes, result.Resumed, wantResumed)
		}
	}
}

func TestBenchStopsAtTheFirstCallWhenRefused(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool())) // no client certificate

	result, err := c.Bench(callContext(t), client.BenchConfig{
		Protocol: client.Connect,
		Load:     client.Load{Concurrency: 2, Duration: time.Minute},
	})
	if result != nil || !client.RefusedByServer(err) {
		t.Fatalf("Bench = %v, %v; want no result and the server's refusal, explained", result, err)
	}
}

func TestBenchRefusesContradictions(t *testing.T) {
	t.Parallel()
	c := newClient(t, "https://127.0.0.1:1")
	_, err := c.Bench(t.Context(), client.BenchConfig{Protocol: client.GRPC, Resume: true,
		Load: client.Load{Requests: 1}})
	if err == nil {
		t.Error("Bench resumed sessions on kept connections; want an error")
	}
	_, err = c.Bench(t.Context(), client.BenchConfig{Protocol: "smoke signals", Load: client.Load{Requests: 1}})
	if err == nil {
		t.Error("Bench took an unknown protocol; want an error")
	}
}

func TestLoadClosedLoopMakesExactlyTheRequests(t *testing.T) {
	t.Parallel()
	result, err := client.Load{Concurrency: 7, Requests: 100}.Run(t.Context(),
		func(context.Context, int) error { return nil })
	if err != nil || result.Calls != 100 {
		t.Fatalf("Run = %d calls, %v; want 100 calls", result.Calls, err)
	}
}

func TestLoadOpenLoopKeepsToItsClock(t *testing.T) {
	t.Parallel()

	// 20 calls are due over 200ms, but each takes 30ms and only one may be
	// in flight: the last is due at 190ms and cannot end before 600ms, so
	// its latency, counted from when it was due, is at least 410ms.
	result, err := client.Load{Concurrency: 1, Rate: 100, Duration: 200 * time.Millisecond}.Run(t.Context(),
		func(context.Context, int) error {
			time.Sleep(30 * time.Millisecond)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if result.Calls != 20 {
		t.Errorf("%d calls, want the 20 due in 200ms at 100/s", result.Calls)
	}
	if result.Max() < 410*time.Millisecond {
		t.Errorf("max latency %s; want at least 410ms, counted from when each call was due", result.Max())
	}
}

func TestLoadCountsErrorsByCode(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	result, err := client.Load{Concurrency: 2, Requests: 10}.Run(t.Context(),
		func(context.Context, int) error {
			switch n.Add(1) % 3 {
			case 0:
				return errors.New("no code of its own")
			case 1:
				return connect.NewError(connect.CodeUnavailable, errors.New("down"))
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"unknown": 3, "unavailable": 4}
	if result.Calls != 10 || !maps.Equal(result.Errors, want) {
		t.Errorf("calls %d, errors %v; want 10 calls, errors %v", result.Calls, result.Errors, want)
	}
}

func TestLoadNeedsAnEnd(t *testing.T) {
	t.Parallel()
	if _, err := (client.Load{Concurrency: 1}).Run(t.Context(),
		func(context.Context, int) error { return nil }); err == nil {
		t.Error("a load with neither duration nor requests ran; want an error")
	}
}
