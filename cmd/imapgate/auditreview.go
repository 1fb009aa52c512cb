package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/policy"
	"github.com/imapgate/imapgate/proxy"
)

// `imapgate audit` reads audit logs as a stream and keeps memory flat
// whatever their size: every table below has a fixed capacity.
//
//   - Failures by address, network and user are counted with the
//     Space-Saving algorithm (Metwally et al., 2005) in tables of
//     reviewTableSize entries: any key with more than 1/reviewTableSize of
//     the failures is certainly listed, and each count is exact or
//     overstated by at most its max_overcount, which the output shows.
//   - Spraying keeps, per user in the failures-by-user table, at most
//     sprayNetCap distinct networks.
//   - New-network detection keeps the successful networks of the
//     reviewHistoryUsers most recently seen users (LRU), at most
//     historyNetCap networks each; a user pushed out of the history is
//     counted (history_evicted) so a reader knows when findings may be
//     first-seen rather than new.
//   - At most reviewListMax new-network findings are listed; all are
//     counted.
//   - Failures by credential (app password, token, certificate) are a
//     Space-Saving table like the others, and the last success of the
//     reviewHistoryUsers most recently successful credentials is kept
//     (LRU; credential_history_evicted counts those pushed out).
const (
	reviewTableSize    = 4096
	sprayNetCap        = 64
	reviewHistoryUsers = 50000
	historyNetCap      = 8
	reviewListMax      = 1000
	reviewMaxLine      = 64 << 10
)

// reviewOptions are the command line of `imapgate audit`.
type reviewOptions struct {
	since, until  time.Time // zero = open
	top           int
	sprayNetworks int
	json          bool
}

// auditLine is the part of an audit event the review reads.
type auditLine struct {
	Time     time.Time `json:"time"`
	Event    string    `json:"event"`
	ClientIP string    `json:"client_ip"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason"`
	User     string    `json:"user"`
	UserHash string    `json:"user_hash"`

	Credential      string `json:"credential"`
	CredentialID    string `json:"credential_id"`
	CredentialLabel string `json:"credential_label"`
}

// review is the running state of one `imapgate audit` run.
type review struct {
	opt reviewOptions

	Lines        uint64            `json:"lines"`
	BadLines     uint64            `json:"bad_lines"`
	Events       uint64            `json:"events"`
	OutOfRange   uint64            `json:"outside_time_range"`
	First        *time.Time        `json:"first,omitempty"`
	Last         *time.Time        `json:"last,omitempty"`
	ByEvent      map[string]uint64 `json:"by_event"`
	AuthResults  map[string]uint64 `json:"auth_results"`    // "result/reason"
	Connects     map[string]uint64 `json:"connect_results"` // "result/reason"
	TLSResults   map[string]uint64 `json:"tls_results"`     // "result/reason"
	Failures     uint64            `json:"failures"`
	byAddr       *topK
	byNet        *topK
	byUser       *topK
	byCred       *topK
	credOK       *credHistory
	history      *userHistory
	NewNets      []newNetwork `json:"new_networks"`
	NewNetsTotal uint64       `json:"new_networks_total"`
}

// newNetwork is a successful login from a network the user had not logged
// in from before in the log.
type newNetwork struct {
	Time    time.Time `json:"time"`
	User    string    `json:"user"`
	Network string    `json:"network"`
	Address string    `json:"client_ip"`
	Known   []string  `json:"known_networks"`
}

func newReview(opt reviewOptions) *review {
	return &review{
		opt:         opt,
		ByEvent:     map[string]uint64{},
		AuthResults: map[string]uint64{},
		Connects:    map[string]uint64{},
		TLSResults:  map[string]uint64{},
		byAddr:      newTopK(reviewTableSize),
		byNet:       newTopK(reviewTableSize),
		byUser:      newTopK(reviewTableSize),
		byCred:      newTopK(reviewTableSize),
		credOK:      newCredHistory(reviewHistoryUsers),
		history:     newUserHistory(reviewHistoryUsers),
	}
}

// failureResults are the auth results that are a failed attempt by the
// client: wrong credentials, refused by policy, rate limited or locked.
// proxy.ResultError (the upstream failed) is not the client's doing.
func failureResults() []string {
	return []string{proxy.ResultFailure, proxy.ResultRefused, proxy.ResultRateLimited, proxy.ResultLocked}
}

// isFailure reports whether an auth result is one of failureResults.
func isFailure(result string) bool { return slices.Contains(failureResults(), result) }

// read consumes one log. Errors are read errors; bad lines are counted.
func (rv *review) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var ev auditLine
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than any event imapgate writes: skip to its end.
			rv.Lines++
			rv.BadLines++
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			continue
		}
		if len(line) > 0 {
			rv.line(line, &ev)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// line handles one audit line.
func (rv *review) line(line []byte, ev *auditLine) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	rv.Lines++
	if len(line) > reviewMaxLine {
		rv.BadLines++
		return
	}
	*ev = auditLine{}
	if err := json.Unmarshal(line, ev); err != nil || ev.Event == "" || ev.Time.IsZero() {
		rv.BadLines++
		return
	}
	if (!rv.opt.since.IsZero() && ev.Time.Before(rv.opt.since)) || (!rv.opt.until.IsZero() && !ev.Time.Before(rv.opt.until)) {
		rv.OutOfRange++
		return
	}
	rv.Events++
	t := ev.Time.UTC()
	if rv.First == nil || t.Before(*rv.First) {
		rv.First = &t
	}
	if rv.Last == nil || t.After(*rv.Last) {
		t2 := t
		rv.Last = &t2
	}
	rv.ByEvent[ev.Event]++
	switch ev.Event {
	case proxy.EventConnect:
		rv.Connects[ev.Result+"/"+ev.Reason]++
	case proxy.EventTLS:
		rv.TLSResults[ev.Result+"/"+ev.Reason]++
	case proxy.EventAuth:
		rv.auth(ev)
	}
}

func (rv *review) auth(ev *auditLine) {
	rv.AuthResults[ev.Result+"/"+ev.Reason]++
	user := ev.User
	if user == "" && ev.UserHash != "" {
		user = "hash:" + ev.UserHash
	}
	ip, ipErr := netip.ParseAddr(ev.ClientIP)
	var nw netip.Prefix
	if ipErr == nil {
		nw = policyNet(ip)
	}
	if ev.Credential != "" {
		rv.credential(ev, user, ip, ipErr)
	}
	switch {
	case isFailure(ev.Result):
		rv.Failures++
		if ipErr == nil {
			rv.byAddr.add(ip.String())
			rv.byNet.add(nw.String())
		}
		if user != "" {
			e := rv.byUser.add(user)
			if ipErr == nil {
				e.addNet(nw)
			}
		}
	case ev.Result == proxy.ResultSuccess && user != "" && ipErr == nil:
		known, isNew := rv.history.login(user, nw)
		if !isNew {
			return
		}
		rv.NewNetsTotal++
		if len(rv.NewNets) < reviewListMax {
			ks := make([]string, len(known))
			for i, k := range known {
				ks[i] = k.String()
			}
			rv.NewNets = append(rv.NewNets, newNetwork{Time: ev.Time.UTC(), User: user, Network: nw.String(), Address: ip.String(), Known: ks})
		}
	}
}

// policyNet is the network of a client address the review counts: /24
// or /64, as the known-device rule counts networks.
func policyNet(ip netip.Addr) netip.Prefix { return policy.DeviceNet(ip) }

// counted is one row of a failures table in the report.
type counted struct {
	Key          string `json:"key"`
	Count        uint64 `json:"count"`
	MaxOvercount uint64 `json:"max_overcount,omitempty"`
	Networks     int    `json:"networks,omitempty"`
}

// sprayed is a user with failures from many networks.
type sprayed struct {
	User     string `json:"user"`
	Networks int    `json:"networks"` // sprayNetCap+1 means more than sprayNetCap
	Failures uint64 `json:"failures"`
}

// reviewReport is what `imapgate audit --json` prints.
type reviewReport struct {
	*review
	HistoryEvicted uint64    `json:"history_evicted"`
	TopAddresses   []counted `json:"failures_by_address"`
	TopNetworks    []counted `json:"failures_by_network"`
	TopUsers       []counted `json:"failures_by_user"`
	// TopCredentials are the credentials imapgate judged itself (app
	// passwords, tokens, certificates) with the most failures.
	TopCredentials   []credentialRow `json:"failures_by_credential"`
	CredEvicted      uint64          `json:"credential_history_evicted"`
	Spraying         []sprayed       `json:"spraying"`
	SprayMinNetworks int             `json:"spraying_min_networks"`
}

func rows(t *topK, n int, withNets bool) []counted {
	var out []counted
	for _, e := range t.sorted() {
		if len(out) == n {
			break
		}
		c := counted{Key: e.key, Count: e.count, MaxOvercount: e.over}
		if withNets {
			c.Networks = e.networks()
		}
		out = append(out, c)
	}
	return out
}

func (rv *review) report() *reviewReport {
	rep := &reviewReport{
		review:           rv,
		HistoryEvicted:   rv.history.Evicted,
		TopAddresses:     rows(rv.byAddr, rv.opt.top, false),
		TopNetworks:      rows(rv.byNet, rv.opt.top, false),
		TopUsers:         rows(rv.byUser, rv.opt.top, true),
		TopCredentials:   rv.credentialRows(rv.opt.top),
		CredEvicted:      rv.credOK.Evicted,
		SprayMinNetworks: rv.opt.sprayNetworks,
	}
	for _, e := range rv.byUser.sorted() {
		if e.networks() >= rv.opt.sprayNetworks {
			rep.Spraying = append(rep.Spraying, sprayed{User: e.key, Networks: e.networks(), Failures: e.count})
		}
	}
	slices.SortStableFunc(rep.Spraying, func(a, b sprayed) int { return b.Networks - a.Networks })
	// Empty lists print as [], not null, for --json readers.
	if rep.Spraying == nil {
		rep.Spraying = []sprayed{}
	}
	if rv.NewNets == nil {
		rv.NewNets = []newNetwork{}
	}
	for _, r := range []*[]counted{&rep.TopAddresses, &rep.TopNetworks, &rep.TopUsers} {
		if *r == nil {
			*r = []counted{}
		}
	}
	return rep
}

// writeText prints the report for a person.
func (rep *reviewReport) writeText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	span := "no events"
	if rep.First != nil {
		span = rep.First.Format(time.RFC3339) + " to " + rep.Last.Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "imapgate audit: %d events, %s (%d lines, %d unreadable, %d outside the time range)\n",
		rep.Events, span, rep.Lines, rep.BadLines, rep.OutOfRange)
	fmt.Fprintf(tw, "\nEvents\t%s\n", kv(rep.ByEvent))
	fmt.Fprintf(tw, "Connections\t%s\n", kv(rep.Connects))
	fmt.Fprintf(tw, "TLS\t%s\n", kv(rep.TLSResults))
	fmt.Fprintf(tw, "Authentication\t%s\n", kv(rep.AuthResults))
	fmt.Fprintf(tw, "Failed attempts\t%d (%s)\n", rep.Failures, strings.Join(failureResults(), ", "))
	table := func(title, col string, rs []counted, nets bool) {
		fmt.Fprintf(tw, "\n%s\n", title)
		if len(rs) == 0 {
			fmt.Fprintln(tw, "  (none)")
			return
		}
		if nets {
			fmt.Fprintf(tw, "  FAILURES\t%s\tNETWORKS\n", col)
		} else {
			fmt.Fprintf(tw, "  FAILURES\t%s\n", col)
		}
		for _, r := range rs {
			n := fmt.Sprint(r.Count)
			if r.MaxOvercount > 0 {
				// Space-Saving: the true count lies in this range.
				n = fmt.Sprintf("%d..%d", r.Count-r.MaxOvercount, r.Count)
			}
			if nets {
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", n, r.Key, netCount(r.Networks))
			} else {
				fmt.Fprintf(tw, "  %s\t%s\n", n, r.Key)
			}
		}
	}
	table("Failures by address", "ADDRESS", rep.TopAddresses, false)
	table("Failures by network (/24, /64)", "NETWORK", rep.TopNetworks, false)
	table("Failures by user", "USER", rep.TopUsers, true)
	rep.writeCredentials(tw)
	fmt.Fprintf(tw, "\nSpraying: users with failures from %d or more networks\n", rep.SprayMinNetworks)
	if len(rep.Spraying) == 0 {
		fmt.Fprintln(tw, "  (none)")
	} else {
		fmt.Fprintln(tw, "  USER\tNETWORKS\tFAILURES")
		for _, s := range rep.Spraying {
			fmt.Fprintf(tw, "  %s\t%s\t%d\n", s.User, netCount(s.Networks), s.Failures)
		}
	}
	fmt.Fprintf(tw, "\nLogins from a new network (%d", rep.NewNetsTotal)
	if rep.NewNetsTotal > uint64(len(rep.NewNets)) {
		fmt.Fprintf(tw, ", first %d listed", len(rep.NewNets))
	}
	if rep.HistoryEvicted > 0 {
		fmt.Fprintf(tw, "; %d users fell out of the history, their next login counts as first seen", rep.HistoryEvicted)
	}
	fmt.Fprintln(tw, ")")
	if len(rep.NewNets) == 0 {
		fmt.Fprintln(tw, "  (none)")
	} else {
		fmt.Fprintln(tw, "  TIME\tUSER\tNETWORK\tADDRESS\tKNOWN NETWORKS")
		for _, n := range rep.NewNets {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", n.Time.Format(time.RFC3339), n.User, n.Network, n.Address, strings.Join(n.Known, " "))
		}
	}
	tw.Flush()
}

func netCount(n int) string {
	if n > sprayNetCap {
		return fmt.Sprintf("more than %d", sprayNetCap)
	}
	return fmt.Sprint(n)
}

// kv prints a count map as "key count, ..." by count, largest first.
func kv(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", strings.TrimSuffix(k, "/"), m[k])
	}
	return strings.Join(parts, ", ")
}

// parseWhen reads --since/--until: RFC 3339, a date (UTC midnight), or a
// Go duration meaning that long before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-11-26T06:00:00Z), a date (2026-11-26) or a duration before now (24h)", s)
}

// auditCommand runs `imapgate audit [flags] [FILE...]`.
func auditCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	since := fs.String("since", "", "only events at or after `TIME` (RFC 3339, a date, or a duration before now such as 24h)")
	until := fs.String("until", "", "only events before `TIME`")
	top := fs.Int("top", 10, "rows in each failures table")
	spray := fs.Int("spray-networks", 5, "a user with failures from at least `N` networks is listed under spraying")
	asJSON := fs.Bool("json", false, "print one JSON object instead of text")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: imapgate audit [--since TIME] [--until TIME] [--json] [FILE...]\nReads audit logs (standard input when no FILE is given) and reviews them.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opt := reviewOptions{top: *top, sprayNetworks: *spray, json: *asJSON}
	now := time.Now()
	var err error
	if *since != "" {
		if opt.since, err = parseWhen(*since, now); err != nil {
			fmt.Fprintf(stderr, "imapgate audit: --since: %v\n", err)
			return 2
		}
	}
	if *until != "" {
		if opt.until, err = parseWhen(*until, now); err != nil {
			fmt.Fprintf(stderr, "imapgate audit: --until: %v\n", err)
			return 2
		}
	}
	if opt.top < 1 || opt.sprayNetworks < 2 {
		fmt.Fprintln(stderr, "imapgate audit: --top must be at least 1 and --spray-networks at least 2")
		return 2
	}
	rv := newReview(opt)
	files := fs.Args()
	if len(files) == 0 {
		if err := rv.read(stdin); err != nil {
			fmt.Fprintf(stderr, "imapgate audit: standard input: %v\n", err)
			return 1
		}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "imapgate audit: %v\n", err)
			return 1
		}
		err = rv.read(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "imapgate audit: %s: %v\n", name, err)
			return 1
		}
	}
	rep := rv.report()
	if opt.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "imapgate audit: %v\n", err)
			return 1
		}
		return 0
	}
	rep.writeText(stdout)
	return 0
}
