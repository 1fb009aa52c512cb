package auth

import (
	"bytes"
	"context"
	"fmt"
)

// Plain is the PLAIN mechanism (RFC 4616): one message carrying an
// authorization identity, a user name and a password, passed through to the
// upstream.
const Plain = "PLAIN"

var plain = mechanism{name: Plain, start: startPlain}

func startPlain(*Env) Exchange { return &plainExchange{} }

// plainExchange reads the one PLAIN message.
type plainExchange struct {
	over   bool
	result Result
}

// errAfterEnd refuses a response once the exchange is over.
var errAfterEnd = fmt.Errorf("%w: response after the exchange ended", ErrMalformed)

// Next asks for the message with an empty challenge when the client sent
// no initial response; otherwise it checks the message's three
// NUL-separated fields with CheckCredentials.
func (x *plainExchange) Next(_ context.Context, response []byte) ([]byte, bool, error) {
	if x.over {
		return nil, false, errAfterEnd
	}
	if response == nil {
		return []byte{}, false, nil
	}
	x.over = true
	identity, rest, ok := bytes.Cut(response, []byte{0})
	username, password, ok2 := bytes.Cut(rest, []byte{0})
	if !ok || !ok2 || bytes.IndexByte(password, 0) >= 0 {
		return nil, false, fmt.Errorf("%w: PLAIN wants three NUL-separated fields", ErrMalformed)
	}
	c, err := CheckCredentials(Plain, string(identity), string(username), string(password))
	if err != nil {
		return nil, false, err
	}
	x.result = c.PassThrough()
	return nil, true, nil
}

func (x *plainExchange) Result() Result { return x.result }
