package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The file names inside a certificates directory. Every command that takes
// --certs DIR looks for these.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	ClientCertFile = "client.crt"
	ClientKeyFile  = "client.key"
	// IntermediateCertFile and IntermediateKeyFile hold the intermediate CA
	// that `pki init --intermediate` puts between the root and the leaves.
	IntermediateCertFile = "intermediate.crt"
	IntermediateKeyFile  = "intermediate.key"
	// CRLFile is the revocation list `pki revoke` keeps.
	CRLFile = "ca.crl"
)

// File modes. Keys are readable by their owner only, as ssh and most TLS
// servers insist; certificates are public.
const (
	KeyFileMode  fs.FileMode = 0o600
	CertFileMode fs.FileMode = 0o644
)

// DefaultServerNames are the names every server certificate from [Init]
// covers, so that a client on the same machine verifies it whichever
// loopback form it dials.
var DefaultServerNames = []string{"localhost", "127.0.0.1", "::1"}

// InitConfig says what [Init] makes.
type InitConfig struct {
	// Dir is the directory the files go into; it is created if missing.
	Dir string
	// ServerSANs are added to [DefaultServerNames] on the server certificate.
	ServerSANs []string
	// ClientName is the client certificate's common name. Default "client".
	ClientName string
	// KeyType is the type of every key made. Default [KeyECDSAP256].
	KeyType KeyType
	// Intermediate puts an intermediate CA between the root and the leaves:
	// the leaves are signed by it, and their files carry it after the leaf.
	Intermediate bool
	// RootKeyPath is where the root CA's key is written. Default Dir/ca.key.
	// With Intermediate, the root key is needed only to sign a new
	// intermediate, so it can be written to removable media and kept offline.
	RootKeyPath string
	// CAValidFor and LeafValidFor set the validity periods. Defaults
	// [DefaultCAValidity] and [DefaultLeafValidity].
	CAValidFor, LeafValidFor time.Duration
	// CANotBefore and LeafNotBefore start those periods at a given moment,
	// past or future, for certificates that are already expired or not yet
	// valid. Default: [Backdate] before now.
	CANotBefore, LeafNotBefore time.Time
	// Force replaces existing files. Without it, Init refuses to touch a
	// directory that already holds any of the files it would write.
	Force bool
}

// InitResult holds what [Init] made and where it wrote it.
type InitResult struct {
	// CA is the root.
	CA *Authority
	// Intermediate is the CA that signed the leaves when one was asked
	// for; nil otherwise.
	Intermediate *Authority
	// Server is the server certificate, for localhost and the extra SANs.
	Server *Issued
	// Client is the client certificate, named by ClientName.
	Client *Issued
	// Files lists the paths written, in the order written.
	Files []string
}

// validityOption is the validity of one kind of certificate in [Init]:
// validFor (or byDefault) from notBefore, or from [Backdate] ago.
func validityOption(notBefore time.Time, validFor, byDefault time.Duration) Option {
	if validFor == 0 {
		validFor = byDefault
	}
	if notBefore.IsZero() {
		return WithValidFor(validFor)
	}
	return WithValidity(notBefore, notBefore.Add(validFor))
}

// Init makes a development PKI — a CA (and optionally an intermediate), a
// server certificate and a client certificate — and writes it into cfg.Dir
// as the files named by [CACertFile] and its siblings. The CA key is written
// too, because issuing and revoking later need it; [InitConfig.RootKeyPath]
// puts it elsewhere.
//
// Leaves that would outlive their CA are refused with an [*OutlivesCAError].
// No file is written unless all can be: existing files are checked first,
// and each file is written to a temporary name and renamed into place.
func Init(cfg InitConfig) (*InitResult, error) {
	if cfg.Dir == "" {
		return nil, errors.New("pki: no directory given for the certificates")
	}
	if info, err := os.Stat(cfg.Dir); err == nil && !info.IsDir() {
		return nil, fmt.Errorf("pki: %q is a file, not a directory: give --certs a directory", cfg.Dir)
	}
	if cfg.ClientName == "" {
		cfg.ClientName = "client"
	}
	if cfg.KeyType == "" {
		cfg.KeyType = KeyECDSAP256
	}
	if cfg.RootKeyPath == "" {
		cfg.RootKeyPath = filepath.Join(cfg.Dir, CAKeyFile)
	}
	caOpts := []Option{WithKeyType(cfg.KeyType),
		validityOption(cfg.CANotBefore, cfg.CAValidFor, DefaultCAValidity)}
	leafOpts := []Option{WithKeyType(cfg.KeyType),
		validityOption(cfg.LeafNotBefore, cfg.LeafValidFor, DefaultLeafValidity)}

	// Each development CA gets a name of its own, so that messages about
	// two of them ("issued by X, server trusts Y") can tell them apart.
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("pki: naming the CA: %w", err)
	}
	name := "echoloop development CA " + hex.EncodeToString(suffix)
	ca, err := NewAuthority(name, caOpts...)
	if err != nil {
		return nil, err
	}
	result := &InitResult{CA: ca}
	signer := ca
	if cfg.Intermediate {
		if signer, err = ca.NewIntermediate(name+" intermediate", caOpts...); err != nil {
			return nil, err
		}
		result.Intermediate = signer
	}

	// The same refusal as IssueFiles: leaves that outlive their CA stop
	// working with it, whatever their own dates say.
	if err := checkWithinCA(signer, resolve(DefaultLeafValidity, nil, leafOpts).notAfter); err != nil {
		return nil, err
	}

	serverNames := uniqueNames(append(append([]string{}, DefaultServerNames...), cfg.ServerSANs...))
	if result.Server, err = signer.IssueServer(serverNames, leafOpts...); err != nil {
		return nil, err
	}
	if result.Client, err = signer.IssueClient(cfg.ClientName, leafOpts...); err != nil {
		return nil, err
	}

	set := fileSet{}
	set.certificate(filepath.Join(cfg.Dir, CACertFile), ca.Certificate)
	if err := set.key(cfg.RootKeyPath, ca.Key); err != nil {
		return nil, err
	}
	if cfg.Intermediate {
		set.certificate(filepath.Join(cfg.Dir, IntermediateCertFile), result.Intermediate.Certificate)
		if err := set.key(filepath.Join(cfg.Dir, IntermediateKeyFile), result.Intermediate.Key); err != nil {
			return nil, err
		}
	}
	for _, leaf := range []struct {
		name   string
		issued *Issued
	}{{"server", result.Server}, {"client", result.Client}} {
		if err := set.issued(filepath.Join(cfg.Dir, leaf.name), leaf.issued); err != nil {
			return nil, err
		}
	}
	// An empty revocation list from the start, so a server can be told
	// --crl before anything is revoked, and pick up the first revocation.
	crl, err := signer.RevocationList(big.NewInt(1), nil)
	if err != nil {
		return nil, err
	}
	set = append(set, encodedFile{filepath.Join(cfg.Dir, CRLFile), crl, CertFileMode})

	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil { //nolint:gosec // G301: certificates in it are for others to read; each key is 0600
		return nil, fmt.Errorf("pki: creating directory %q: %w", cfg.Dir, err)
	}
	// The root key's own directory, readable by its owner only: it is
	// meant for removable media or a vault mount, not for sharing.
	if keyDir := filepath.Dir(cfg.RootKeyPath); keyDir != cfg.Dir {
		if err := os.MkdirAll(keyDir, 0o700); err != nil {
			return nil, fmt.Errorf("pki: creating directory %q for the root key: %w", keyDir, err)
		}
	}
	if result.Files, err = set.write(cfg.Force); err != nil {
		return nil, err
	}
	return result, nil
}

// fileSet is a group of files written together or not at all.
type fileSet []encodedFile

type encodedFile struct {
	path string
	data []byte
	mode fs.FileMode
}

func (s *fileSet) certificate(path string, certs ...*x509.Certificate) {
	*s = append(*s, encodedFile{path, EncodeCertificates(certs...), CertFileMode})
}

func (s *fileSet) key(path string, key crypto.Signer) error {
	data, err := EncodeKey(key)
	if err != nil {
		return err
	}
	*s = append(*s, encodedFile{path, data, KeyFileMode})
	return nil
}

// issued adds base.crt (the leaf, then its chain) and base.key.
func (s *fileSet) issued(base string, i *Issued) error {
	*s = append(*s, encodedFile{base + ".crt", i.CertificatePEM(), CertFileMode})
	return s.key(base+".key", i.Key)
}

// write checks that no file exists unless force is set, stages every file
// before renaming any — so a failure to write one (a full disk, a directory
// in the way) leaves the old set whole — and returns the paths written.
func (s fileSet) write(force bool) ([]string, error) {
	paths := make([]string, 0, len(s))
	for _, f := range s {
		paths = append(paths, f.path)
	}
	existing, err := existingFiles(paths)
	if err != nil {
		return nil, err
	}
	if len(existing) > 0 && !force {
		verb := "already exist"
		if len(existing) == 1 {
			verb = "already exists"
		}
		return nil, fmt.Errorf("pki: %s %s; nothing was written "+
			"(pass --force to replace, or choose other paths)", strings.Join(existing, ", "), verb)
	}

	staged := make([]string, 0, len(s))
	defer func() {
		for _, tmp := range staged {
			os.Remove(tmp) // a no-op once renamed
		}
	}()
	for _, f := range s {
		tmp, err := stageFile(f.path, f.data, f.mode)
		if err != nil {
			return nil, err
		}
		staged = append(staged, tmp)
	}
	dirs := map[string]bool{}
	for i, f := range s {
		if err := os.Rename(staged[i], f.path); err != nil {
			return nil, fmt.Errorf("pki: moving %q into place: %w", f.path, err)
		}
		dirs[filepath.Dir(f.path)] = true
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// uniqueNames drops repeated names, keeping the first of each.
func uniqueNames(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func existingFiles(paths []string) ([]string, error) {
	var existing []string
	for _, path := range paths {
		info, err := os.Lstat(path)
		switch {
		case err == nil && info.IsDir():
			return nil, fmt.Errorf("pki: %q is a directory; remove it or choose another --certs directory", path)
		case err == nil:
			existing = append(existing, path)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("pki: checking %q: %w", path, err)
		}
	}
	return existing, nil
}

// WriteFile writes data to path with the given mode, atomically: it writes a
// temporary file in the same directory, syncs it and renames it over path, so
// that a reader never sees half a file.
func WriteFile(path string, data []byte, mode fs.FileMode) error {
	tmp, err := stageFile(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: moving %q into place: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// stageFile writes data, synced, to a temporary file beside path and returns
// its name; the caller renames it into place or removes it.
func stageFile(path string, data []byte, mode fs.FileMode) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", fmt.Errorf("pki: writing %q: %w", path, err)
	}
	fail := func(step string, err error) (string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", fmt.Errorf("pki: %s %q: %w", step, path, err)
	}

	// CreateTemp makes the file 0600; set the final mode before any byte
	// lands so a key is never readable by others, even for an instant.
	if err := tmp.Chmod(mode); err != nil {
		return fail("setting mode of", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail("writing", err)
	}
	if err := tmp.Sync(); err != nil {
		return fail("syncing", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("pki: closing %q: %w", path, err)
	}
	return tmp.Name(), nil
}

// syncDir makes a rename in dir durable across a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pki: opening directory %q: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pki: syncing directory %q: %w", dir, err)
	}
	return nil
}
