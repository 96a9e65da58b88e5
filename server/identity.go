package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"

	"google.golang.org/protobuf/types/known/timestamppb"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
)

// PeerFromChain describes the client as the server verified it: the leaf of
// a verified chain, and the subjects of that chain from leaf to root. It
// returns nil for an empty chain.
//
// Only a chain from tls.ConnectionState.VerifiedChains may be passed here:
// the certificates a client merely presented prove nothing.
func PeerFromChain(chain []*x509.Certificate) *echov1.Peer {
	if len(chain) == 0 {
		return nil
	}
	leaf := chain[0]

	peer := &echov1.Peer{
		CommonName:        leaf.Subject.CommonName,
		DnsNames:          leaf.DNSNames,
		EmailAddresses:    leaf.EmailAddresses,
		SerialNumber:      pki.SerialHex(leaf),
		Sha256Fingerprint: pki.Fingerprint(leaf),
		NotBefore:         timestamppb.New(leaf.NotBefore),
		NotAfter:          timestamppb.New(leaf.NotAfter),
		Chain:             make([]string, 0, len(chain)),
	}
	for _, ip := range leaf.IPAddresses {
		peer.IpAddresses = append(peer.IpAddresses, ip.String())
	}
	for _, u := range leaf.URIs {
		peer.Uris = append(peer.Uris, u.String())
	}
	// The same rule as the policy's spiffe patterns, so that the identity
	// reported is the one that was judged; why there is none is logged on
	// denial, not told to the client.
	peer.SpiffeId, _ = pki.SPIFFEID(leaf)
	for _, c := range chain {
		peer.Chain = append(peer.Chain, c.Subject.String())
	}
	// In a verified chain the leaf's issuer is, byte for byte, the next
	// certificate's subject: its text is already made.
	peer.Issuer = leaf.Issuer.String()
	if len(chain) > 1 {
		peer.Issuer = peer.Chain[1]
	}
	return peer
}

// connInfo is what the server knows of one TLS connection. It is computed
// once, when the connection is handed to the HTTP server after its
// handshake, and shared by every call on that connection: identity does not
// change within a connection, so there is no reason to rebuild it per call.
type connInfo struct {
	peer        *echov1.Peer
	subject     string // the leaf's subject DN, for logs
	allowed     bool   // whether the server's policy admits the leaf
	tlsVersion  string
	cipherSuite string
	alpn        string
	serverName  string
	resumed     bool
	// noSPIFFEID says why a leaf with a spiffe URI SAN has no SPIFFE ID,
	// for the denial log line; nil otherwise.
	noSPIFFEID error
}

type connInfoKey struct{}

// connContext is the http.Server's ConnContext hook. It runs once per
// connection, after the handshake, and decides identity and policy there.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	tlsConn, ok := c.(*tls.Conn)
	if !ok {
		return ctx
	}
	state := tlsConn.ConnectionState()
	info := &connInfo{
		tlsVersion:  tls.VersionName(state.Version),
		cipherSuite: tls.CipherSuiteName(state.CipherSuite),
		alpn:        state.NegotiatedProtocol,
		serverName:  state.ServerName,
		resumed:     state.DidResume,
	}
	if len(state.VerifiedChains) > 0 {
		leaf := state.VerifiedChains[0][0]
		info.peer = PeerFromChain(state.VerifiedChains[0])
		info.subject = info.peer.Chain[0]
		info.allowed = s.opts.policy.Allows(leaf)
		if !info.allowed {
			_, info.noSPIFFEID = pki.SPIFFEID(leaf) // only a denial's log line reads it
		}
	}
	return context.WithValue(ctx, connInfoKey{}, info)
}

func connInfoFrom(ctx context.Context) *connInfo {
	info, _ := ctx.Value(connInfoKey{}).(*connInfo)
	return info
}
