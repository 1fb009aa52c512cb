package auth

import "github.com/imapgate/imapgate/auth/oauth"

// XOAuth2 is the XOAUTH2 mechanism, Google's and Microsoft's format for
// the same bearer token OAUTHBEARER carries (no RFC): it runs the same
// exchange (see tokenExchange), with XOAUTH2's message, its error
// challenge ({"status":"401",...}) and its empty dummy response.
const XOAuth2 = string(oauth.XOAuth2)

var xoauth2 = mechanism{name: XOAuth2, offered: tokensOffered, start: startTokens(oauth.XOAuth2)}
