// Package oauth checks OAuth 2.0 bearer tokens sent with the OAUTHBEARER
// (RFC 7628) and XOAUTH2 SASL mechanisms.
//
// A mechanism parses the client's message, validates the token against
// the OpenID Provider, and on failure sends the error challenge and waits
// for the client's dummy response before it answers NO:
//
//	v, err := oauth.New(oauth.Config{Issuer: "https://login.example.com", Audiences: []string{"imap"}})
//	defer v.Close()
//	...
//	msg, err := oauth.ParseClientResponse(oauth.OAuthBearer, clientMessage)
//	if err == nil {
//		var id oauth.Identity
//		if id, err = v.Validate(ctx, msg.User, msg.Token); err == nil {
//			return upstream.LoginAs(ctx, id.Mailbox) // success
//		}
//	}
//	if errors.Is(err, oauth.ErrUnavailable) {
//		return err // NO [UNAVAILABLE] at once; not the client's failure
//	}
//	reply := exchange(v.Challenge(oauth.OAuthBearer, err)) // "+ " and the JSON, base64
//	return oauth.FinishFailed(oauth.OAuthBearer, reply, err) // NO; oauth.Reason(err) for the audit
//
// JWT access tokens are verified locally against the issuer's published
// keys (fetched after OpenID Connect discovery and cached); opaque tokens,
// and JWTs too if asked, through RFC 7662 introspection with a short-lived
// cache. The mailbox is one claim of the token (email by default); a user
// named in the SASL message must match it.
//
// Tokens never appear in errors or logs: Token hides itself from fmt,
// log/slog and encoding/json. Every refusal wraps one sentinel error, and
// Reason maps it to the audit reason word (token_expired, token_signature,
// ...). The package holds no global state; a Validator is safe for
// concurrent use.
package oauth
