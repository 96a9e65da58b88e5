package client

import "errors"

// certificateAlerts are the TLS alerts, as crypto/tls spells them, with
// which a server turns down the certificate a client presented or the lack
// of one (RFC 8446, section 6.2). Alerts about versions, cipher suites or
// ALPN are left out: they refuse the connection, not the client.
var certificateAlerts = map[string]bool{
	"bad certificate":               true,
	"unsupported certificate":       true,
	"revoked certificate":           true,
	"expired certificate":           true,
	"unknown certificate":           true,
	"unknown certificate authority": true,
	"access denied":                 true,
	"certificate required":          true,
}

// RefusedByServer reports whether err is a call the server turned down
// during the TLS handshake because of the client certificate. It is false
// for a call refused by the server's policy after the handshake
// (permission_denied), for a server certificate this client does not
// trust, and for a server that could not be reached: none of those says
// the server judged the client's certificate.
func RefusedByServer(err error) bool {
	var explained *Error
	return errors.As(err, &explained) && certificateAlerts[explained.Alert]
}
