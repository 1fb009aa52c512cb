package oauth

import (
	"context"
	"testing"
)

// BenchmarkValidateJWT is the CPU cost of one OAUTHBEARER login's token
// check once the issuer's keys are cached: an RS256 (2048-bit) JWT from
// zitadel's example OP, without introspection. "parse" is the SASL message
// alone, "parse+validate" a whole login's share.
func BenchmarkValidateJWT(b *testing.B) {
	o := startOP(b, nil)
	v, _, _ := newValidator(b, o, Config{})
	token := o.login(b, mailApp, aliceLogin)
	msg := buildMessage(OAuthBearer, aliceMail, token)
	ctx := context.Background()
	if _, err := v.Validate(ctx, aliceMail, NewToken(token)); err != nil {
		b.Fatal(err)
	}
	b.Run("validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Validate(ctx, aliceMail, NewToken(token)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseOAuthBearer(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse+validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := ParseOAuthBearer(msg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := v.Validate(ctx, r.User, r.Token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
