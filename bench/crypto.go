package main

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/echoloop/echoloop/pki"
)

// cryptoCost is the server's share of the cryptography of one TLS 1.3
// handshake with client certificates, each operation timed alone in this
// process: the lower bound of what any server pays for a handshake.
type cryptoCost struct {
	sign        time.Duration // the server's CertificateVerify
	verify      time.Duration // checking the client's CertificateVerify
	chainVerify time.Duration // checking the CA's signature on the client certificate
	keyExchange time.Duration // the server's side of the key exchange
	curve       tls.CurveID
}

// full is a full handshake's: signatures and key exchange.
func (c cryptoCost) full() time.Duration { return c.sign + c.verify + c.chainVerify + c.keyExchange }

// resumed is a resumed handshake's: a PSK with a fresh key exchange, as Go
// clients and servers resume, and no signature at all.
func (c cryptoCost) resumed() time.Duration { return c.keyExchange }

// measureCrypto times the operations with the key set's own keys and the
// key exchange the handshakes negotiated.
func measureCrypto(keys keySet, curve tls.CurveID) (cryptoCost, error) {
	serverKey, err := pki.LoadKey(filepath.Join(keys.dir, pki.ServerKeyFile))
	if err != nil {
		return cryptoCost{}, err
	}
	clientPair, err := pki.LoadKeyPair(filepath.Join(keys.dir, pki.ClientCertFile), filepath.Join(keys.dir, pki.ClientKeyFile))
	if err != nil {
		return cryptoCost{}, err
	}
	clientKey, ok := clientPair.PrivateKey.(crypto.Signer)
	if !ok {
		return cryptoCost{}, errors.New("the client key cannot sign")
	}
	clientLeaf, err := x509.ParseCertificate(clientPair.Certificate[0])
	if err != nil {
		return cryptoCost{}, err
	}
	cas, err := pki.LoadCertificates(filepath.Join(keys.dir, pki.CACertFile))
	if err != nil {
		return cryptoCost{}, err
	}

	// What TLS 1.3 signs (RFC 8446 section 4.4.3): 64 spaces, a context
	// string, a zero byte and the transcript hash.
	content := append(make([]byte, 0, 130), []byte("                                                                "+
		"TLS 1.3, server CertificateVerify\x00")...)
	content = append(content, make([]byte, sha256.Size)...)

	cost := cryptoCost{curve: curve}
	cost.sign, err = timeIt(func() error { _, err := signTLS13(serverKey, content); return err })
	if err != nil {
		return cost, fmt.Errorf("timing signatures: %w", err)
	}
	signature, err := signTLS13(clientKey, content)
	if err != nil {
		return cost, err
	}
	cost.verify, err = timeIt(func() error { return verifyTLS13(clientKey.Public(), content, signature) })
	if err != nil {
		return cost, fmt.Errorf("timing verification: %w", err)
	}
	cost.chainVerify, err = timeIt(func() error { return clientLeaf.CheckSignatureFrom(cas[0]) })
	if err != nil {
		return cost, fmt.Errorf("timing the chain's signature: %w", err)
	}
	cost.keyExchange, err = keyExchangeCost(curve)
	if err != nil {
		return cost, fmt.Errorf("timing the key exchange: %w", err)
	}
	return cost, nil
}

// signTLS13 signs as a TLS 1.3 CertificateVerify does: RSA-PSS for RSA
// keys, ECDSA over SHA-256, Ed25519 over the content itself.
func signTLS13(key crypto.Signer, content []byte) ([]byte, error) {
	switch key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(rand.Reader, content, crypto.Hash(0))
	case *rsa.PublicKey:
		digest := sha256.Sum256(content)
		return key.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash,
			Hash: crypto.SHA256})
	}
	digest := sha256.Sum256(content)
	return key.Sign(rand.Reader, digest[:], crypto.SHA256)
}

func verifyTLS13(pub crypto.PublicKey, content, signature []byte) error {
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, content, signature) {
			return errors.New("ed25519 signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		digest := sha256.Sum256(content)
		return rsa.VerifyPSS(pub, crypto.SHA256, digest[:], signature,
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case *ecdsa.PublicKey:
		digest := sha256.Sum256(content)
		if !ecdsa.VerifyASN1(pub, digest[:], signature) {
			return errors.New("ecdsa signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("no TLS 1.3 signature for a %T", pub)
}

// keyExchangeCost times the server's side of the key exchange: parse the
// client's share, make the server's, derive the secret.
func keyExchangeCost(curve tls.CurveID) (time.Duration, error) {
	x25519 := func(peer []byte) error {
		pub, err := ecdh.X25519().NewPublicKey(peer)
		if err != nil {
			return err
		}
		own, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		_, err = own.ECDH(pub)
		return err
	}
	clientX, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return 0, err
	}
	peerX := clientX.PublicKey().Bytes()

	switch curve {
	case tls.X25519MLKEM768:
		clientKEM, err := mlkem.GenerateKey768()
		if err != nil {
			return 0, err
		}
		peerKEM := clientKEM.EncapsulationKey().Bytes()
		return timeIt(func() error {
			ek, err := mlkem.NewEncapsulationKey768(peerKEM)
			if err != nil {
				return err
			}
			ek.Encapsulate()
			return x25519(peerX)
		})
	case tls.X25519:
		return timeIt(func() error { return x25519(peerX) })
	case tls.CurveP256:
		clientP, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return 0, err
		}
		peerP := clientP.PublicKey().Bytes()
		return timeIt(func() error {
			pub, err := ecdh.P256().NewPublicKey(peerP)
			if err != nil {
				return err
			}
			own, err := ecdh.P256().GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			_, err = own.ECDH(pub)
			return err
		})
	}
	return 0, fmt.Errorf("no timing for the key exchange %s", curve)
}

// timeIt is the mean CPU time of op over at least 100ms of it and 20 runs.
// It counts the CPU of this thread rather than the time on the clock, as
// the servers' figures do, so that other work on the machine does not
// inflate the bound.
func timeIt(op func() error) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, err := threadCPU()
	if err != nil {
		return 0, err
	}
	n, spent := 0, time.Duration(0)
	for n < 20 || spent < 100*time.Millisecond {
		if err := op(); err != nil {
			return 0, err
		}
		n++
		now, err := threadCPU()
		if err != nil {
			return 0, err
		}
		spent = now - start
	}
	return spent / time.Duration(n), nil
}

func threadCPU() (time.Duration, error) {
	var usage unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &usage); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()), nil
}
