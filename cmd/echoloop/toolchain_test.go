package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLacksSecurityFixes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		version string
		lacks   bool
	}{
		{"go1.26.8", true},
		{"go1.26.10", true},
		{"go1.26rc1", true},
		{"go1.26.8 X:boringcrypto", true},
		{"go1.25.9", true},
		{"go1.26.11", false},
		{"go1.26.12", false},
		{"go1.26.11-custom", false},
		{"go1.27rc1", false},
		{"go1.27.0", false},
		{"go1.100.0", false}, // compared as numbers, not as text
		{"devel go1.27-9a1b2c3 Mon Nov 2 10:00:00 2026 +0000", false},
		{"", false},
	}
	for _, tc := range cases {
		if got := lacksSecurityFixes(tc.version); got != tc.lacks {
			t.Errorf("lacksSecurityFixes(%q) = %v, want %v", tc.version, got, tc.lacks)
		}
	}
}

// TestFixedGoIsGoModsToolchain keeps the version the server warns about in
// step with the toolchain go.mod asks for.
func TestFixedGoIsGoModsToolchain(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	toolchain := ""
	for lines := bufio.NewScanner(f); lines.Scan(); {
		if rest, ok := strings.CutPrefix(lines.Text(), "toolchain "); ok {
			toolchain = strings.TrimSpace(rest)
		}
	}
	if toolchain != fixedGo {
		t.Errorf("go.mod's toolchain line says %q, fixedGo is %q: change both together", toolchain, fixedGo)
	}
}
