package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// machine describes where the suite ran.
type machine struct {
	cpu    string
	cores  int
	memory string
	kernel string
	goVer  string
	date   string
}

func describeMachine() machine {
	m := machine{
		cpu:    "unknown CPU",
		cores:  runtime.NumCPU(),
		memory: "unknown",
		kernel: "unknown",
		goVer:  runtime.Version(),
		date:   time.Now().UTC().Format("2006-01-02"),
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				m.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int64
		for line := range strings.Lines(string(data)) {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kib); err == nil {
				m.memory = fmt.Sprintf("%.0f GiB", float64(kib)/(1<<20))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(data))
	}
	return m
}

func (m machine) summary() string {
	return fmt.Sprintf("%d cores (%s), %s, %s, %s", m.cores, m.cpu, m.memory, m.kernel, m.goVer)
}

// loadAverage is the one-minute load average: how busy the machine was
// with work other than the suite's, roughly.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}
