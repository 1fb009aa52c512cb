package main

// The [upstream] table: the IMAP server imapgate logs users in to.

import (
	"encoding/base64"
	"net"
	"net/netip"
	"strings"

	"github.com/imapgate/imapgate/proxy"
)

// UpstreamConfig is the [upstream] table, or one [[upstream]] table: a
// real IMAP server, at one or more addresses.
type UpstreamConfig struct {
	// Name names the upstream for [[route]], lookups, metrics and audit
	// events. Required in [[upstream]] tables, unique, letters, digits
	// and "._-".
	// Default: "" in a single [upstream] table.
	Name string `toml:"name"`

	// Address is the "host:port" of the upstream.
	// Default: none; Address or Addresses is required.
	Address string `toml:"address"`

	// Addresses are the "host:port"s of one server group (a primary and
	// its standbys, or equal peers): a login goes to a healthy one, and
	// on to the next when one cannot be connected to.
	// Default: none; Address or Addresses is required, not both.
	Addresses []string `toml:"addresses"`

	// Balance is "round-robin" (healthy addresses in turn) or "failover"
	// (the first healthy one, in the order written).
	// Default: "round-robin".
	Balance string `toml:"balance"`

	// ProbeInterval is how often each address is probed (connect, TLS,
	// greeting, CAPABILITY, LOGOUT; never a login). It must be more
	// than 0.
	// Default: 10s.
	ProbeInterval Duration `toml:"probe_interval"`

	// TLS is "none", "starttls" or "implicit" (proxy.UpstreamTLS). "none"
	// sends passwords in clear text: only for a trusted network.
	// Default: "starttls".
	TLS string `toml:"tls"`

	// ServerName is the name the upstream certificate is verified against;
	// LoadConfig fills it in when TLS is on.
	// Default: the host of Address.
	ServerName string `toml:"server_name"`

	// CAFile is a PEM bundle of roots for the upstream certificate.
	// Default: "" (the system roots).
	CAFile string `toml:"ca_file"`

	// PinSHA256 is the base64 SHA-256 of the upstream certificate's
	// SubjectPublicKeyInfo; when set, that key is required.
	// Default: "" (no pin).
	PinSHA256 string `toml:"pin_sha256"`

	// Login is "auto" (AUTHENTICATE PLAIN if offered, else LOGIN), "plain"
	// or "login" (proxy.LoginMethod).
	// Default: "auto".
	Login string `toml:"login"`

	// UserTemplate maps the name a client logs in with to the name the
	// upstream knows (proxy.Upstream.UserTemplate): {user} as typed,
	// {local} before its last "@", {domain} after it. `CORP\{local}`
	// gives Exchange's DOMAIN\user form, "{local}@corp.example" a UPN.
	// Default: "" (the name as typed).
	UserTemplate string `toml:"user_template"`

	// ForwardClientIP is "none", "id" (ID x-originating-ip) or "proxy-v2"
	// (proxy.ForwardMode).
	// Default: "none".
	ForwardClientIP string `toml:"forward_client_ip"`

	// ConnectTimeout bounds everything before the credential is sent:
	// connect, TLS, greeting, STARTTLS, CAPABILITY, ID. It must be more
	// than 0.
	// Default: 10s.
	ConnectTimeout Duration `toml:"connect_timeout"`

	// LoginTimeout bounds the wait for the upstream's answer once the
	// credential is sent; running out counts as a failed attempt
	// (upstream_no_answer). It must be more than 0.
	// Default: 30s, more than Dovecot 2.3's longest auth penalty (15s)
	// plus its auth_failure_delay (2s).
	LoginTimeout Duration `toml:"login_timeout"`

	// SourceAddresses are local IP addresses to dial the upstream from,
	// in turn.
	// Default: none (the system chooses).
	SourceAddresses []string `toml:"source_addresses"`

	// Master is the [upstream.master] table: the master user for clients
	// that log in with an app password.
	// Default: none (nil): no master login, so no app passwords.
	Master *MasterConfig `toml:"master"`
}

// AddressList returns Address, or Addresses.
func (u *UpstreamConfig) AddressList() []string {
	if u.Address != "" {
		return []string{u.Address}
	}
	return u.Addresses
}

func (d *decoder) upstream(t *table, u *UpstreamConfig) {
	t.str("name", &u.Name)
	t.str("address", &u.Address)
	t.strings("addresses", &u.Addresses)
	t.str("balance", &u.Balance)
	t.duration("probe_interval", &u.ProbeInterval)
	t.str("tls", &u.TLS)
	t.str("server_name", &u.ServerName)
	t.str("ca_file", &u.CAFile)
	t.str("pin_sha256", &u.PinSHA256)
	t.str("login", &u.Login)
	t.str("user_template", &u.UserTemplate)
	t.str("forward_client_ip", &u.ForwardClientIP)
	t.duration("connect_timeout", &u.ConnectTimeout)
	t.duration("login_timeout", &u.LoginTimeout)
	t.strings("source_addresses", &u.SourceAddresses)
	mt, hasMaster := t.sub("master", "[upstream.master]")
	if !hasMaster {
		mt.quiet = true
	}
	d.master(mt, u)
	t.done()

	var hosts []string
	switch {
	case u.Address != "" && len(u.Addresses) > 0:
		t.problem("addresses", "is set, and so is address: write one address as address = \"host:port\", or several as addresses = [...], not both")
	case u.Address == "" && len(u.Addresses) == 0 && t.ok("addresses"):
		t.missing("address", "is required: the IMAP server to log users in to, e.g. \"mail.internal:143\"")
	case u.Address != "":
		if err := checkHostPort(u.Address, "mail.internal:143", false); err != nil {
			t.problem("address", "%s", err)
		} else {
			host, _, _ := net.SplitHostPort(u.Address)
			hosts = append(hosts, host)
		}
	default:
		seen := map[string]int{}
		for i, a := range u.Addresses {
			key := elemKey(t.keyOf("addresses"), i)
			if err := checkHostPort(a, "mail.internal:143", false); err != nil {
				t.problemKey(key, "%s", err)
				continue
			}
			if j, dup := seen[strings.ToLower(a)]; dup {
				t.problemKey(key, "%q is already addresses[%d]", a, j)
				continue
			}
			seen[strings.ToLower(a)] = i
			host, _, _ := net.SplitHostPort(a)
			hosts = append(hosts, host)
		}
	}
	oneOf(t, "balance", u.Balance, proxy.BalanceRoundRobin, proxy.BalanceFailover)
	t.positive("probe_interval", u.ProbeInterval)
	oneOf(t, "tls", u.TLS, proxy.UpstreamPlaintext, proxy.UpstreamSTARTTLS, proxy.UpstreamImplicit)
	oneOf(t, "login", u.Login, proxy.LoginAuto, proxy.LoginPlain, proxy.LoginLogin)
	oneOf(t, "forward_client_ip", u.ForwardClientIP, proxy.ForwardNone, proxy.ForwardID, proxy.ForwardProxyV2)
	if err := proxy.CheckUserTemplate(u.UserTemplate); err != nil {
		t.problem("user_template", "%s", err)
	}
	t.positive("connect_timeout", u.ConnectTimeout)
	t.positive("login_timeout", u.LoginTimeout)

	if u.PinSHA256 != "" {
		if sum, err := base64.StdEncoding.DecodeString(u.PinSHA256); err != nil || len(sum) != 32 {
			t.problem("pin_sha256", "%q is not the base64 of a SHA-256 (32 bytes); compute it with: "+
				"openssl x509 -in CERT -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64", u.PinSHA256)
		}
	}
	if proxy.UpstreamTLS(u.TLS) == proxy.UpstreamPlaintext {
		// Settings that only verify TLS would be silently ignored.
		for _, name := range []string{"server_name", "ca_file", "pin_sha256"} {
			if v, _ := t.m[name].(string); v != "" {
				t.problem(name, "is set, but upstream.tls is %q: nothing would be verified", proxy.UpstreamPlaintext)
			}
		}
		for i, host := range hosts {
			if !isLoopback(host) {
				t.warn("tls", "is %q: passwords go to %s in clear text; use this only on a trusted network", proxy.UpstreamPlaintext, u.AddressList()[i])
				break
			}
		}
	} else {
		t.file("ca_file", u.CAFile)
		if u.ServerName == "" && len(hosts) == 1 {
			u.ServerName = hosts[0] // several addresses: each is verified against its own host
		}
	}
	for i, s := range u.SourceAddresses {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			t.problemKey(elemKey(t.keyOf("source_addresses"), i), "%q is not an IP address of this host", s)
		}
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
