package config

import "fmt"

// CheckAuth reports why the listener cannot run under RELAY_AUTH=jwt: a
// fixed listener carries no token, so unless it is marked public anyone who
// reaches it could send to its channel. Restricting who may connect (mtls,
// allow=) is the other way to keep it.
func (l Listener) CheckAuth() error {
	if l.Handshake() || l.Public || l.MTLS || len(l.Allow) > 0 {
		return nil
	}
	return fmt.Errorf("RELAY_INGEST_LISTENERS: fixed listener %s carries no token, so with RELAY_AUTH=jwt anyone who reaches it could send to %q: "+
		"mark it public (%s;public) if that is intended, restrict who may connect (;allow=CIDR or ;mtls), or remove it and send through a handshake listener (ADDR=*/%s) with a token",
		l, l.Channel, l, l.Framing)
}
