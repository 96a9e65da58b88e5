package pki

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	// Force replaces existing files. Without it, Init refuses to touch a
	// directory that already holds any of the files it would write.
	Force bool
}

// InitResult holds what [Init] made and where it wrote it.
type InitResult struct {
	CA     *Authority
	Server *Issued
	Client *Issued
	// Files lists the paths written, in the order written.
	Files []string
}

// Init makes a development PKI — a CA, a server certificate and a client
// certificate — and writes it into cfg.Dir as the files named by
// [CACertFile] and its siblings. The CA key is written too, because issuing
// and revoking later need it; move it elsewhere when that is not wanted.
//
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

	names := []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile}
	existing, err := existingFiles(cfg.Dir, names)
	if err != nil {
		return nil, err
	}
	if !cfg.Force {
		if len(existing) > 0 {
			verb := "already exist"
			if len(existing) == 1 {
				verb = "already exists"
			}
			return nil, fmt.Errorf("pki: %s %s; nothing was written "+
				"(pass --force to replace, or choose another --certs directory)",
				strings.Join(existing, ", "), verb)
		}
	}

	// Each development CA gets a name of its own, so that messages about
	// two of them ("issued by X, server trusts Y") can tell them apart.
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("pki: naming the CA: %w", err)
	}
	ca, err := NewAuthority("echoloop development CA "+hex.EncodeToString(suffix), WithKeyType(cfg.KeyType))
	if err != nil {
		return nil, err
	}
	serverNames := uniqueNames(append(append([]string{}, DefaultServerNames...), cfg.ServerSANs...))
	server, err := ca.IssueServer(serverNames, WithKeyType(cfg.KeyType))
	if err != nil {
		return nil, err
	}
	client, err := ca.IssueClient(cfg.ClientName, WithKeyType(cfg.KeyType))
	if err != nil {
		return nil, err
	}

	files, err := encodeAll(ca, server, client)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("pki: creating directory %q: %w", cfg.Dir, err)
	}
	// Stage every file before renaming any, so that a failure to write one
	// (a full disk, a directory in the way) leaves the old set whole.
	result := &InitResult{CA: ca, Server: server, Client: client}
	staged := make([]string, 0, len(names))
	defer func() {
		for _, tmp := range staged {
			os.Remove(tmp) // a no-op once renamed
		}
	}()
	for _, name := range names {
		f := files[name]
		tmp, err := stageFile(filepath.Join(cfg.Dir, name), f.data, f.mode)
		if err != nil {
			return nil, err
		}
		staged = append(staged, tmp)
	}
	for i, name := range names {
		path := filepath.Join(cfg.Dir, name)
		if err := os.Rename(staged[i], path); err != nil {
			return nil, fmt.Errorf("pki: moving %q into place: %w", path, err)
		}
		result.Files = append(result.Files, path)
	}
	if err := syncDir(cfg.Dir); err != nil {
		return nil, err
	}
	return result, nil
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

type encodedFile struct {
	data []byte
	mode fs.FileMode
}

func encodeAll(ca *Authority, server, client *Issued) (map[string]encodedFile, error) {
	caKey, err := EncodeKey(ca.Key)
	if err != nil {
		return nil, err
	}
	serverKey, err := server.KeyPEM()
	if err != nil {
		return nil, err
	}
	clientKey, err := client.KeyPEM()
	if err != nil {
		return nil, err
	}
	return map[string]encodedFile{
		CACertFile:     {ca.CertificatePEM(), CertFileMode},
		CAKeyFile:      {caKey, KeyFileMode},
		ServerCertFile: {server.CertificatePEM(), CertFileMode},
		ServerKeyFile:  {serverKey, KeyFileMode},
		ClientCertFile: {client.CertificatePEM(), CertFileMode},
		ClientKeyFile:  {clientKey, KeyFileMode},
	}, nil
}

func existingFiles(dir string, names []string) ([]string, error) {
	var existing []string
	for _, name := range names {
		path := filepath.Join(dir, name)
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
