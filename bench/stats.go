package main

import (
	"fmt"
	"slices"
	"time"
)

// spread is a median with the least and greatest values it was taken of.
type spread struct {
	median, min, max float64
	n                int
}

func spreadOf(values []float64) spread {
	if len(values) == 0 {
		return spread{}
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	mid := len(sorted) / 2
	median := sorted[mid]
	if len(sorted)%2 == 0 {
		median = (sorted[mid-1] + sorted[mid]) / 2
	}
	return spread{median: median, min: sorted[0], max: sorted[len(sorted)-1], n: len(sorted)}
}

// metric reads one figure of a sample.
type metric func(sample) float64

var (
	cpuPerCall    metric = func(s sample) float64 { return micros(s.cpu) }
	callsPerSec   metric = func(s sample) float64 { return s.perSecond }
	allocsPerCall metric = func(s sample) float64 { return s.allocs }
	bytesPerCall  metric = func(s sample) float64 { return s.allocBytes }
	writesPerCall metric = func(s sample) float64 { return s.writes }
	p50           metric = func(s sample) float64 { return micros(s.p50) }
	p90           metric = func(s sample) float64 { return micros(s.p90) }
	p99           metric = func(s sample) float64 { return micros(s.p99) }
	maxLatency    metric = func(s sample) float64 { return micros(s.max) }
	// capacity is the handshakes (or calls) a second one core of the
	// server could sustain at the CPU each cost it.
	capacity metric = func(s sample) float64 {
		if s.cpu <= 0 {
			return 0
		}
		return float64(time.Second) / float64(s.cpu)
	}
)

// median is the median of one series' figures.
func (s *series) median(m metric) float64 {
	values := make([]float64, len(s.samples))
	for i, sm := range s.samples {
		values[i] = m(sm)
	}
	return spreadOf(values).median
}

// ratio is num's figure over den's, taken round by round.
func ratio(num, den *series, m metric) spread {
	var values []float64
	for i := range min(len(num.samples), len(den.samples)) {
		if d := m(den.samples[i]); d != 0 {
			values = append(values, m(num.samples[i])/d)
		}
	}
	return spreadOf(values)
}

func (s spread) String() string {
	if s.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", s.median, s.min, s.max)
}

// errorsOf sums a series' failed calls.
func (s *series) errorsOf() int64 {
	var n int64
	for _, sm := range s.samples {
		n += sumErrors(sm.errors)
	}
	return n
}
