package tlsconf

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// RFC2136 publishes DNS-01 TXT records with dynamic updates (RFC 2136)
// signed by a TSIG key (RFC 8945): BIND, Knot, PowerDNS and most
// self-hosted DNS accept them. Use it as ACMEOptions.DNS.
type RFC2136 struct {
	// Server is the primary that accepts updates, "host:port". Required.
	Server string

	// KeyName is the TSIG key's name ("acme-key"). Required.
	KeyName string

	// Algorithm is "hmac-sha256" (empty), "hmac-sha224", "hmac-sha384",
	// "hmac-sha512" or "hmac-sha1".
	Algorithm string

	// Secret is the base64 TSIG secret, as tsig-keygen writes it.
	// Required.
	Secret string

	// Timeout bounds one update. Zero: 10s.
	Timeout time.Duration
}

// TSIGAlgorithms maps the configured algorithm names to miekg/dns's.
var tsigAlgorithms = map[string]string{
	"":            dns.HmacSHA256,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
	"hmac-sha1":   dns.HmacSHA1,
}

// Check reports a missing server or key, an unknown algorithm or a secret
// that is not base64, without sending anything.
func (r *RFC2136) Check() error {
	switch {
	case r.Server == "":
		return errors.New("rfc2136: no server")
	case r.KeyName == "":
		return errors.New("rfc2136: no TSIG key name")
	case r.Secret == "":
		return errors.New("rfc2136: empty TSIG secret")
	}
	if _, ok := tsigAlgorithms[strings.ToLower(r.Algorithm)]; !ok {
		return fmt.Errorf("rfc2136: TSIG algorithm %q is not one of hmac-sha256, hmac-sha224, hmac-sha384, hmac-sha512, hmac-sha1", r.Algorithm)
	}
	if _, err := base64.StdEncoding.DecodeString(r.Secret); err != nil {
		return errors.New("rfc2136: the TSIG secret is not base64 (copy the secret \"...\" of tsig-keygen's output)")
	}
	return nil
}

// AppendRecords adds the TXT records to zone (libdns.RecordAppender).
func (r *RFC2136) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := r.update(ctx, zone, recs, false); err != nil {
		return nil, err
	}
	return recs, nil
}

// DeleteRecords removes exactly these TXT records (libdns.RecordDeleter).
func (r *RFC2136) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := r.update(ctx, zone, recs, true); err != nil {
		return nil, err
	}
	return recs, nil
}

func (r *RFC2136) update(ctx context.Context, zone string, recs []libdns.Record, remove bool) error {
	if err := r.Check(); err != nil {
		return err
	}
	zone = dns.Fqdn(zone)
	var rrs []dns.RR
	var names []string
	for _, rec := range recs {
		rr := rec.RR()
		if rr.Type != "TXT" {
			return fmt.Errorf("rfc2136: only TXT records are published, not %s", rr.Type)
		}
		name := dns.Fqdn(libdns.AbsoluteName(rr.Name, zone))
		ttl := uint32(rr.TTL / time.Second)
		if ttl == 0 {
			ttl = 60
		}
		rrs = append(rrs, &dns.TXT{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
			Txt: splitTXT(rr.Data),
		})
		names = append(names, name)
	}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	if remove {
		m.Remove(rrs)
	} else {
		m.Insert(rrs)
	}
	key := dns.Fqdn(r.KeyName)
	m.SetTsig(key, tsigAlgorithms[strings.ToLower(r.Algorithm)], 300, time.Now().Unix())
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c := &dns.Client{Net: "tcp", Timeout: timeout, TsigSecret: map[string]string{key: r.Secret}}
	what := "add"
	if remove {
		what = "delete"
	}
	resp, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err != nil {
		if errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrSecret) {
			answer := ""
			if resp != nil {
				answer = " (" + dns.RcodeToString[resp.Rcode]
				if t := resp.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
					answer += ", TSIG error " + dns.RcodeToString[int(t.Error)]
				}
				answer += ")"
			}
			return fmt.Errorf("rfc2136: %s TXT %s at %s: the server did not accept TSIG key %s%s: check tsig_key_name, tsig_algorithm and the secret: %w", what, strings.Join(names, " "), r.Server, r.KeyName, answer, err)
		}
		return fmt.Errorf("rfc2136: %s TXT %s at %s: %w", what, strings.Join(names, " "), r.Server, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		hint := ""
		switch resp.Rcode {
		case dns.RcodeNotAuth, dns.RcodeBadSig, dns.RcodeBadKey:
			hint = fmt.Sprintf(": the server did not accept TSIG key %s (check tsig_key_name, tsig_algorithm and the secret)", r.KeyName)
		case dns.RcodeRefused:
			hint = fmt.Sprintf(": the zone %s does not allow updates with key %s (allow-update or update-policy)", zone, r.KeyName)
		case dns.RcodeNotZone:
			hint = fmt.Sprintf(": the server is not authoritative for %s", zone)
		}
		if t := resp.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
			hint += fmt.Sprintf(" [TSIG error %s]", dns.RcodeToString[int(t.Error)])
		}
		return fmt.Errorf("rfc2136: %s TXT %s at %s: server answered %s%s", what, strings.Join(names, " "), r.Server, dns.RcodeToString[resp.Rcode], hint)
	}
	return nil
}

// splitTXT cuts a value into the 255-byte strings a TXT record holds.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// ExecHook publishes DNS-01 TXT records by running an admin's program as
// `PROGRAM present FQDN VALUE` and `PROGRAM cleanup FQDN VALUE`, FQDN
// being "_acme-challenge.<domain>." with its trailing dot. Exit status 0 is
// success; anything else fails the challenge with the program's last
// output line as the reason. Use it as ACMEOptions.DNS for any DNS without
// dynamic updates.
type ExecHook struct {
	// Program is the path of the program. Required.
	Program string

	// Timeout bounds one run. Zero: 2 minutes.
	Timeout time.Duration
}

// AppendRecords runs `Program present` for each TXT record.
func (h *ExecHook) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, rec := range recs {
		if err := h.run(ctx, "present", zone, rec); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// DeleteRecords runs `Program cleanup` for each TXT record.
func (h *ExecHook) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var errs []error
	for _, rec := range recs {
		errs = append(errs, h.run(ctx, "cleanup", zone, rec))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return recs, nil
}

func (h *ExecHook) run(ctx context.Context, verb, zone string, rec libdns.Record) error {
	if h.Program == "" {
		return errors.New("dns exec hook: no program")
	}
	rr := rec.RR()
	fqdn := dns.Fqdn(libdns.AbsoluteName(rr.Name, dns.Fqdn(zone)))
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Program, verb, fqdn, rr.Data)
	var out bytes.Buffer
	cmd.Stdout = &limitedBuffer{b: &out, max: 4096}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		reason := lastLine(out.String())
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %v", ctx.Err(), timeout)
		}
		if reason != "" {
			return fmt.Errorf("dns exec hook: %s %s %s: %w: %s", h.Program, verb, fqdn, err, reason)
		}
		return fmt.Errorf("dns exec hook: %s %s %s: %w", h.Program, verb, fqdn, err)
	}
	return nil
}

// limitedBuffer keeps the first max bytes written and drops the rest, so a
// chatty hook cannot grow memory.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
