package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
)

// TestMain lets the test binary play the server role too, as the suite's
// binary does: startServer runs this very program with -serve.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		if err := serveFromArgs(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestEveryServerAnswersAndReportsItsCounters runs each kind of server as
// the suite does, loads it briefly with the client the suite gives it, and
// checks what measure reads from the server's own counters.
func TestEveryServerAnswersAndReportsItsCounters(t *testing.T) {
	dir := t.TempDir()
	run := &suiteRun{cfg: suiteConfig{connections: 1, concurrency: 4, handshakeConcurrency: 2, messageSize: 64},
		dir: dir, started: time.Now(), keys: map[pki.KeyType]keySet{}}
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	const d = 200 * time.Millisecond
	cases := []struct {
		kind  string
		drive driver
	}{
		{kindEcholoop, echoloopClientDriver(run.cfg, keys, client.HTTP, d)},
		{kindGRPC, grpcClientDriver(run.cfg, keys, d, 0, 4)},
		{kindGRPCServeHTTP, grpcClientDriver(run.cfg, keys, d, 500, 4)},
		{kindConnect, echoloopClientDriver(run.cfg, keys, client.GRPCWeb, d)},
		{kindTLS, handshakeDriver(run.cfg, keys, d, true)},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			procs, stop, err := run.servers(keys, tc.kind)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			got, err := measure(t.Context(), procs[0], tc.drive)
			if err != nil {
				t.Fatal(err)
			}
			if got.calls == 0 || sumErrors(got.errors) != 0 || got.cpu <= 0 || got.writes <= 0 || got.p99 <= 0 {
				t.Errorf("%s: %d calls, errors %v, %s CPU and %.2f writes per call, p99 %s; want calls, "+
					"no error, and the server's own counters", tc.kind, got.calls, got.errors, got.cpu, got.writes, got.p99)
			}
			if tc.kind == kindTLS && got.resumed != got.handshakes {
				t.Errorf("%d of %d handshakes resumed; want all, from the first one's ticket", got.resumed, got.handshakes)
			}
		})
	}
}

func TestSpreadIsTheMedianWithItsBounds(t *testing.T) {
	if got := spreadOf([]float64{4, 1, 3, 2}); got.median != 2.5 || got.min != 1 || got.max != 4 {
		t.Errorf("spread of 1..4 = %+v, want median 2.5 between 1 and 4", got)
	}
	if got := spreadOf([]float64{3, 1, 2}).median; got != 2 {
		t.Errorf("median of 1, 2, 3 = %g, want 2", got)
	}
}

func TestReflowWrapsParagraphsAndBullets(t *testing.T) {
	text := "## Heading that stays as it is, however long it may be\n\n" +
		strings.Repeat("word ", 30) + "\n\n- " + strings.Repeat("item ", 30) + "\n"
	for _, line := range strings.Split(reflow(text, 40), "\n") {
		if len(line) > 40 && !strings.HasPrefix(line, "##") {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
		if strings.HasPrefix(line, "item") {
			t.Errorf("a bullet's continuation lost its indent: %q", line)
		}
	}
}
