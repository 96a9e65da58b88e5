package main

import (
	"go/version"
	"log/slog"
	"runtime"
	"strings"
)

// fixedGo is the first Go release whose standard library fixes the
// vulnerabilities in net/http, crypto/tls and crypto/x509 that the server
// reaches (.ci/govulncheck lists them). It is go.mod's toolchain line,
// which TestFixedGoIsGoModsToolchain keeps it equal to; GOTOOLCHAIN=local
// ignores that line and builds with whatever Go is installed.
const fixedGo = "go1.26.11"

// lacksSecurityFixes reports whether a Go version, as runtime.Version
// reports it, is a release older than fixedGo. A version that is not a
// release (a development build, "devel go1.27-…") is not flagged: there is
// nothing to compare it with.
func lacksSecurityFixes(goVersion string) bool {
	// A build with GOEXPERIMENT set reports "go1.26.8 X:name".
	goVersion, _, _ = strings.Cut(goVersion, " ")
	return version.IsValid(goVersion) && version.Compare(goVersion, fixedGo) < 0
}

// warnIfOldGo logs a warning when this binary was built with a Go older
// than fixedGo, so that a server built from the Quick start under
// GOTOOLCHAIN=local says so on every start rather than run quietly
// without the fixes.
func warnIfOldGo(log *slog.Logger) {
	built := runtime.Version()
	if !lacksSecurityFixes(built) {
		return
	}
	log.Warn("built with a Go whose standard library lacks security fixes this server needs",
		"go.version", built, "fixed_in", fixedGo,
		"fix", "rebuild with GOTOOLCHAIN=auto go build ./cmd/echoloop (or go tool task build), "+
			"which fetches "+fixedGo+" through the module proxy")
}
