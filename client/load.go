package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
)

// Load says how hard and for how long a benchmark calls: the calls in
// flight, when to stop, and whether calls wait for each other (a closed
// loop) or start on a clock (an open loop). [Client.Bench] runs one against
// an echoloop server; [Load.Run] runs one with any call at all, so that
// other clients can be measured by the same rules.
type Load struct {
	// Concurrency is how many calls are in flight at once. In a closed
	// loop each of them starts its next call as soon as the last one
	// ended; in an open loop it bounds the calls in flight. Default 1.
	Concurrency int
	// Duration is how long calls are started for. Calls still in flight
	// when it ends are waited for and counted.
	Duration time.Duration
	// Requests is how many calls to make. With Duration too, the run
	// stops at whichever comes first; one of them must be set.
	Requests int64
	// Rate, when positive, starts calls at this many per second whatever
	// the answers (an open loop). Latency is then measured from the
	// moment a call was due, not from when a free worker took it, so a
	// server that falls behind shows in the latency instead of quietly
	// lowering the rate.
	Rate float64
	// Progress, when set, is called about ten times a second while the
	// load runs, from a goroutine of its own.
	Progress func(Progress)
}

// Progress is how far a running [Load] has got.
type Progress struct {
	Calls   int64 // calls that have ended, failed ones included
	Errors  int64 // calls that failed
	Elapsed time.Duration
}

// CallFunc makes one call. worker numbers the caller from 0 to
// Concurrency-1, so that a call can pick a connection of its own.
type CallFunc func(ctx context.Context, worker int) error

// LoadResult is what a [Load] measured.
type LoadResult struct {
	// Calls counts the calls that ended, failed ones included.
	Calls int64
	// Errors counts failed calls by the name of their connect.Code
	// ("unavailable", "deadline_exceeded", ...).
	Errors map[string]int64
	// Elapsed runs from the first call's start to the last one's end.
	Elapsed time.Duration

	latency *hdrhistogram.Histogram // successful calls, in microseconds
}

// Latency bounds, in microseconds: a microsecond resolves the fastest
// loopback call, and an hour is beyond any deadline a benchmark sets.
const (
	latencyMin    = 1
	latencyMax    = int64(time.Hour / time.Microsecond)
	latencyDigits = 3
)

// histogramShards bounds the histograms a load keeps: workers share them
// round robin, each behind its own lock, so that many workers neither
// contend on one lock nor hold a histogram each.
const histogramShards = 16

// Errs sums [LoadResult.Errors].
func (r *LoadResult) Errs() int64 {
	var n int64
	for _, count := range r.Errors {
		n += count
	}
	return n
}

// PerSecond is the rate at which calls ended, failed ones included.
func (r *LoadResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// Percentile is the latency below which the given percentage (0 to 100)
// of successful calls ended, to three significant digits; 0 without any.
func (r *LoadResult) Percentile(p float64) time.Duration {
	if r.latency.TotalCount() == 0 {
		return 0
	}
	return time.Duration(r.latency.ValueAtPercentile(p)) * time.Microsecond
}

// Max is the slowest successful call.
func (r *LoadResult) Max() time.Duration {
	return time.Duration(r.latency.Max()) * time.Microsecond
}

// Mean is the mean latency of successful calls.
func (r *LoadResult) Mean() time.Duration {
	return time.Duration(r.latency.Mean() * float64(time.Microsecond))
}

func (l Load) validate() error {
	var problems []error
	if l.Concurrency < 0 {
		problems = append(problems, fmt.Errorf("concurrency must be positive, got %d", l.Concurrency))
	}
	if l.Duration < 0 || l.Requests < 0 {
		problems = append(problems, errors.New("duration and requests must not be negative"))
	}
	if l.Duration == 0 && l.Requests == 0 {
		problems = append(problems, errors.New("a load needs a duration or a number of requests"))
	}
	if l.Rate < 0 {
		problems = append(problems, fmt.Errorf("rate must not be negative, got %g", l.Rate))
	}
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// Run makes calls as the load describes until it is over or ctx ends. When
// ctx ends first, it returns what was measured so far with ctx's error.
func (l Load) Run(ctx context.Context, call CallFunc) (*LoadResult, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	workers := max(l.Concurrency, 1)
	run := newLoadRun(min(workers, histogramShards))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	start := time.Now()
	var deadline time.Time
	if l.Duration > 0 {
		deadline = start.Add(l.Duration)
	}
	stopProgress := l.reportProgress(run, start)

	var wg sync.WaitGroup
	if l.Rate > 0 {
		due := make(chan time.Time, workers)
		wg.Go(func() { l.schedule(runCtx, start, deadline, due) })
		for w := range workers {
			wg.Go(func() {
				for at := range due {
					run.record(w, at, call(runCtx, w))
				}
			})
		}
	} else {
		for w := range workers {
			wg.Go(func() {
				for run.take(l.Requests, deadline) && runCtx.Err() == nil {
					run.record(w, time.Now(), call(runCtx, w))
				}
			})
		}
	}
	wg.Wait()
	stopProgress()

	result := run.result(time.Since(start))
	return result, ctx.Err()
}

// schedule sends the moment each call of an open loop is due, then closes
// due. When every worker is busy the send waits, and the calls behind it
// start late with their due time kept.
func (l Load) schedule(ctx context.Context, start, deadline time.Time, due chan<- time.Time) {
	defer close(due)
	interval := float64(time.Second) / l.Rate
	for i := int64(0); l.Requests == 0 || i < l.Requests; i++ {
		at := start.Add(time.Duration(float64(i) * interval))
		if !deadline.IsZero() && !at.Before(deadline) {
			return
		}
		if wait := time.Until(at); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return
			}
		}
		select {
		case due <- at:
		case <-ctx.Done():
			return
		}
	}
}

// reportProgress calls Progress ten times a second until the returned
// function is called.
func (l Load) reportProgress(run *loadRun, start time.Time) (stop func()) {
	if l.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-ticker.C:
				l.Progress(Progress{Calls: run.calls.Load(), Errors: run.errors.Load(), Elapsed: time.Since(start)})
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		l.Progress(Progress{Calls: run.calls.Load(), Errors: run.errors.Load(), Elapsed: time.Since(start)})
	}
}

// loadRun is the state a running load shares between its workers.
type loadRun struct {
	started atomic.Int64 // calls handed out by take
	calls   atomic.Int64
	errors  atomic.Int64

	shards []histogramShard

	mu     sync.Mutex
	byCode map[string]int64
}

type histogramShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newLoadRun(shards int) *loadRun {
	run := &loadRun{shards: make([]histogramShard, shards), byCode: map[string]int64{}}
	for i := range run.shards {
		run.shards[i].h = hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
	}
	return run
}

// take reports whether a closed loop may start one more call.
func (r *loadRun) take(requests int64, deadline time.Time) bool {
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return false
	}
	return requests == 0 || r.started.Add(1) <= requests
}

// record counts one ended call that started, or was due, at from.
func (r *loadRun) record(worker int, from time.Time, err error) {
	elapsed := time.Since(from)
	r.calls.Add(1)
	if err != nil {
		r.errors.Add(1)
		code := connect.CodeOf(err).String()
		r.mu.Lock()
		r.byCode[code]++
		r.mu.Unlock()
		return
	}
	micros := max(elapsed.Microseconds(), latencyMin)
	shard := &r.shards[worker%len(r.shards)]
	shard.mu.Lock()
	_ = shard.h.RecordValue(min(micros, latencyMax)) // in range by construction
	shard.mu.Unlock()
}

func (r *loadRun) result(elapsed time.Duration) *LoadResult {
	merged := hdrhistogram.New(latencyMin, latencyMax, latencyDigits)
	for i := range r.shards {
		merged.Merge(r.shards[i].h)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return &LoadResult{Calls: r.calls.Load(), Errors: r.byCode, Elapsed: elapsed, latency: merged}
}
