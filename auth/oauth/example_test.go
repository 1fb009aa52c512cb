package oauth_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imapgate/imapgate/auth/oauth"
)

func ExampleParseOAuthBearer() {
	msg := []byte("n,a=alice@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer eyJhbGciOi.eyJzdWIi.c2ln\x01\x01")
	r, err := oauth.ParseOAuthBearer(msg)
	fmt.Println(r.User, r.Host, r.Port, r.Token, err)
	// Output: alice@example.com imap.example.com 993 oauth.Token(redacted) <nil>
}

func ExampleErrorChallenge() {
	err := fmt.Errorf("%w: exp has passed", oauth.ErrTokenExpired)
	fmt.Printf("%s %s\n", oauth.ErrorChallenge(oauth.OAuthBearer, err, "", "https://login.example.com/.well-known/openid-configuration"), oauth.Reason(err))
	fmt.Printf("%s\n", oauth.ErrorChallenge(oauth.XOAuth2, err, "", ""))
	// Output:
	// {"status":"invalid_token","openid-configuration":"https://login.example.com/.well-known/openid-configuration"} token_expired
	// {"status":"401","schemes":"Bearer"}
}

// One AUTHENTICATE OAUTHBEARER on the server side. exchange sends a
// challenge and returns the client's next message; login logs in upstream.
func ExampleValidator() {
	v, err := oauth.New(oauth.Config{
		Issuer:       "https://login.example.com",
		Audiences:    []string{"api://imap"},
		MailboxClaim: "preferred_username",
		Introspection: &oauth.Introspection{ // revocation checks; drop for JWT-only
			ClientID: "imapgate", ClientSecret: "from a file", CheckJWT: true,
		},
	})
	if err != nil {
		panic(err) // a bad config; a provider that is down is retried instead
	}
	defer v.Close()

	authenticate := func(ctx context.Context, first []byte, exchange func([]byte) []byte, login func(string) error) error {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		msg, err := oauth.ParseOAuthBearer(first)
		if err == nil {
			var id oauth.Identity
			if id, err = v.Validate(ctx, msg.User, msg.Token); err == nil {
				return login(id.Mailbox)
			}
		}
		if errors.Is(err, oauth.ErrUnavailable) {
			return err // NO [UNAVAILABLE]; not counted against the client
		}
		reply := exchange(v.Challenge(oauth.OAuthBearer, err))
		return oauth.FinishFailed(oauth.OAuthBearer, reply, err) // NO; audit reason oauth.Reason(err)
	}
	_ = authenticate
}
