package main

// `imapgate audit` by credential: the app passwords, tokens and
// certificates imapgate judged itself (the auth event's credential,
// credential_id and credential_label), which of them failed, from where,
// and when each last logged in (README "imapgate audit").

import (
	"container/list"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/imapgate/imapgate/proxy"
)

// credReasonCap bounds the distinct failure reasons kept per credential;
// more are counted under "other".
const credReasonCap = 8

// credDetail is what the review keeps of a credential in the failures
// table (topEntry.cred).
type credDetail struct {
	kind, id, label, user string
	reasons               map[string]uint64
}

// credKey names a credential: its kind and id, or its label when it has
// no id (a token without jti names its client).
func credKey(ev *auditLine) string {
	if ev.CredentialID != "" {
		return ev.Credential + " " + ev.CredentialID
	}
	return ev.Credential + " label:" + ev.CredentialLabel
}

// credential counts one auth event that names a credential.
func (rv *review) credential(ev *auditLine, user string, ip netip.Addr, ipErr error) {
	key := credKey(ev)
	switch {
	case isFailure(ev.Result):
		e := rv.byCred.add(key)
		if e.cred == nil {
			e.cred = &credDetail{kind: ev.Credential, id: ev.CredentialID, reasons: map[string]uint64{}}
		}
		e.cred.label, e.cred.user = ev.CredentialLabel, user
		reason := ev.Reason
		if _, seen := e.cred.reasons[reason]; !seen && len(e.cred.reasons) >= credReasonCap {
			reason = "other"
		}
		e.cred.reasons[reason]++
		if ipErr == nil {
			e.addNet(policyNet(ip))
		}
	case ev.Result == proxy.ResultSuccess:
		from := ""
		if ipErr == nil {
			from = ip.String()
		}
		rv.credOK.success(key, ev.Time.UTC(), from)
	}
}

// credentialRow is one row of the failures-by-credential table.
type credentialRow struct {
	Kind         string            `json:"credential"`
	ID           string            `json:"credential_id,omitempty"`
	Label        string            `json:"credential_label,omitempty"`
	User         string            `json:"user,omitempty"`
	Failures     uint64            `json:"failures"`
	MaxOvercount uint64            `json:"max_overcount,omitempty"`
	Networks     int               `json:"networks"`
	Reasons      map[string]uint64 `json:"reasons"`
	// LastSuccess is the credential's last successful login in the log
	// (nil: none, or it fell out of the history), from LastSuccessFrom.
	LastSuccess     *time.Time `json:"last_success,omitempty"`
	LastSuccessFrom string     `json:"last_success_from,omitempty"`
}

// credentialRows returns the n credentials with the most failures.
func (rv *review) credentialRows(n int) []credentialRow {
	out := []credentialRow{}
	for _, e := range rv.byCred.sorted() {
		if len(out) == n {
			break
		}
		c := e.cred
		row := credentialRow{Kind: c.kind, ID: c.id, Label: c.label, User: c.user, Failures: e.count,
			MaxOvercount: e.over, Networks: e.networks(), Reasons: c.reasons}
		if ok, found := rv.credOK.last(e.key); found {
			t := ok.when
			row.LastSuccess, row.LastSuccessFrom = &t, ok.from
		}
		out = append(out, row)
	}
	return out
}

// credHistory remembers the last successful login of the most recently
// successful credentials, at most size (LRU).
type credHistory struct {
	size    int
	lru     *list.List // of *credSuccess, most recent first
	m       map[string]*list.Element
	Evicted uint64
}

type credSuccess struct {
	key  string
	when time.Time
	from string
}

func newCredHistory(size int) *credHistory {
	return &credHistory{size: size, lru: list.New(), m: map[string]*list.Element{}}
}

func (h *credHistory) success(key string, when time.Time, from string) {
	if el, ok := h.m[key]; ok {
		h.lru.MoveToFront(el)
		if s := el.Value.(*credSuccess); !when.Before(s.when) {
			s.when, s.from = when, from
		}
		return
	}
	s := &credSuccess{}
	if h.lru.Len() >= h.size {
		el := h.lru.Back()
		s = el.Value.(*credSuccess)
		delete(h.m, s.key)
		h.lru.Remove(el)
		h.Evicted++
	}
	*s = credSuccess{key: key, when: when, from: from}
	h.m[key] = h.lru.PushFront(s)
}

func (h *credHistory) last(key string) (credSuccess, bool) {
	if el, ok := h.m[key]; ok {
		return *el.Value.(*credSuccess), true
	}
	return credSuccess{}, false
}

// writeCredentials prints the failures-by-credential table.
func (rep *reviewReport) writeCredentials(w io.Writer) {
	fmt.Fprintln(w, "\nFailures by credential (app passwords, tokens, certificates)")
	if len(rep.TopCredentials) == 0 {
		fmt.Fprintln(w, "  (none)")
		return
	}
	fmt.Fprintln(w, "  FAILURES\tCREDENTIAL\tID\tLABEL\tUSER\tNETWORKS\tREASONS\tLAST SUCCESS")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, r := range rep.TopCredentials {
		n := fmt.Sprint(r.Failures)
		if r.MaxOvercount > 0 {
			n = fmt.Sprintf("%d..%d", r.Failures-r.MaxOvercount, r.Failures)
		}
		last := "none in the log"
		if r.LastSuccess != nil {
			last = r.LastSuccess.Format(time.RFC3339) + " from " + dash(r.LastSuccessFrom)
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, r.Kind, dash(r.ID), dash(r.Label), dash(r.User),
			netCount(r.Networks), strings.ReplaceAll(kv(r.Reasons), ", ", ","), last)
	}
}
