package server

// The slog keys the server writes. They are named once here so that every
// log line, and anyone searching the logs, agrees on them.
const (
	// KeyRemote is the client's address as host:port.
	KeyRemote = "remote"
	// KeyReason is a short, stable word for why a handshake or call failed;
	// see [HandshakeReason] for the handshake vocabulary.
	KeyReason = "reason"
	// KeyError is the full error text behind a reason.
	KeyError = "error"

	// KeyPeerCN is the client certificate's subject common name.
	KeyPeerCN = "peer.cn"
	// KeyPeerSubject is the client certificate's subject distinguished name.
	KeyPeerSubject = "peer.subject"
	// KeyPeerIssuer is the client certificate's issuer distinguished name.
	KeyPeerIssuer = "peer.issuer"
	// KeyPeerSerial is the client certificate's serial number in hex.
	KeyPeerSerial = "peer.serial"
	// KeyPeerNotAfter is the end of the client certificate's validity.
	KeyPeerNotAfter = "peer.not_after"
	// KeyPeerSHA256 is the SHA-256 fingerprint of the client certificate.
	KeyPeerSHA256 = "peer.sha256"

	// KeyCASubject is the subject distinguished name of a CA certificate:
	// one of the client CAs, or one in the server's own chain.
	KeyCASubject = "ca.subject"
	// KeyCANotBefore is the start of that CA certificate's validity.
	KeyCANotBefore = "ca.not_before"
	// KeyCANotAfter is the end of that CA certificate's validity.
	KeyCANotAfter = "ca.not_after"
	// KeyBundle is the file of client CAs the server trusts.
	KeyBundle = "bundle"

	// KeyTLSVersion is the negotiated TLS version, for example "TLS 1.3".
	KeyTLSVersion = "tls.version"

	// KeyProcedure is the RPC procedure, for example "/echo.v1.EchoService/Echo".
	KeyProcedure = "procedure"
	// KeyProtocol is one of "connect", "grpc", "grpc-web" or "http".
	KeyProtocol = "protocol"
	// KeyCode is the call's Connect code, "ok" on success.
	KeyCode = "code"
	// KeyDuration is how long the call took.
	KeyDuration = "duration"
	// KeyAddr is the address the server listens on.
	KeyAddr = "addr"
	// KeyAllow is the policy in force: "any client of the CA", or under
	// allow.cn, allow.dns, allow.uri and allow.ou the lists that narrow it.
	KeyAllow = "allow"
)
