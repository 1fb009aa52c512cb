package main

// imapgate client-cert add|list|revoke: the client certificates registered
// in the credential store named by auth.app_passwords (README "Client
// certificates"), through the running serve's admin socket or on the file.

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/auth/credstore"
)

const clientCertUsage = `Usage:
  imapgate client-cert add USER --label L [--expires D] FILE [--config PATH]
  imapgate client-cert list [USER] [--config PATH]
  imapgate client-cert revoke ID [--config PATH]
  imapgate client-cert revoke USER --label L [--config PATH]

FILE is the device's certificate, PEM (a chain: its first certificate);
only its public key is registered, so a certificate renewed with the same
key keeps working. A file with a private key in it is refused.
--expires takes a duration ("90d", "720h") or a date ("2027-06-30").
The store is the config's auth.app_passwords; while serve runs, the
commands go through its admin.socket, and a revocation ends the sessions
that certificate opened.
`

// clientCerts is what the client-cert commands need of a store.
type clientCerts interface {
	addCert(ctx context.Context, req credstore.NewClientCert) (credstore.ClientCert, error)
	listCerts(ctx context.Context, user string) ([]credstore.ClientCert, error)
	// revokeCert revokes by id, or, when id is "", user's certificate label.
	revokeCert(ctx context.Context, id, user, label string) (credstore.Revoked, error)
	close() error
}

// clientCertCommand runs imapgate client-cert and returns the exit code.
func clientCertCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, clientCertUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("client-cert "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "config file `PATH`")
	label := fs.String("label", "", "the device's `LABEL`")
	expires := fs.String("expires", "", "expiry of the registration: a duration (90d, 720h) or a date (2027-06-30)")
	// Positional arguments may come before, between and after the flags.
	var pos []string
	for {
		for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			pos, args = append(pos, args[0]), args[1:]
		}
		if len(args) == 0 {
			break
		}
		if err := fs.Parse(args); err != nil {
			return 2
		}
		args = fs.Args()
		if len(args) > 0 && strings.HasPrefix(args[0], "-") {
			break // "--" ended the flags
		}
	}
	pos = append(pos, args...)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "imapgate client-cert %s: %v\n", sub, err)
		return 1
	}
	switch {
	case sub == "add" && (len(pos) != 2 || *label == ""):
		fmt.Fprint(stderr, "imapgate client-cert add: needs USER, --label and the certificate FILE\n\n"+clientCertUsage)
		return 2
	case sub == "list" && len(pos) > 1, sub == "revoke" && len(pos) != 1:
		fmt.Fprint(stderr, clientCertUsage)
		return 2
	case sub != "add" && sub != "list" && sub != "revoke":
		fmt.Fprintf(stderr, "imapgate client-cert: unknown command %q\n\n%s", sub, clientCertUsage)
		return 2
	}
	req := credstore.NewClientCert{Label: *label}
	if sub == "add" {
		req.User = pos[0]
		data, err := os.ReadFile(pos[1])
		if err != nil {
			return fail(err)
		}
		if req.Certificate, err = credstore.ParseCertificatePEM(data); err != nil {
			return fail(fmt.Errorf("%s: %w", pos[1], err))
		}
		if *expires != "" {
			if req.Expires, err = parseExpiry(*expires, time.Now()); err != nil {
				return fail(err)
			}
		}
	}
	opened, err := openStoreOf(*path)
	if err != nil {
		return fail(err)
	}
	defer opened.close()
	store, ok := opened.(clientCerts)
	if !ok {
		return fail(errors.New("this store does not hold client certificates"))
	}
	ctx := context.Background()
	switch sub {
	case "add":
		c, err := store.addCert(ctx, req)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "registered client certificate for %s, label %q, id %s\nkey sha256 %s\nsubject %s, valid until %s\n",
			c.User, c.Label, c.ID, c.Fingerprint, c.Subject, c.NotAfter.UTC().Format("2006-01-02"))
	case "list":
		user := ""
		if len(pos) == 1 {
			user = pos[0]
		}
		list, err := store.listCerts(ctx, user)
		if err != nil {
			return fail(err)
		}
		writeClientCerts(stdout, list)
	case "revoke":
		id, user := pos[0], ""
		if *label != "" {
			id, user = "", pos[0]
		}
		r, err := store.revokeCert(ctx, id, user, *label)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "revoked %s %s of %s, label %q\n", r.Kind, r.ID, r.User, r.Label)
	}
	return 0
}

// writeClientCerts prints registered certificates as a table.
func writeClientCerts(w io.Writer, list []credstore.ClientCert) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tLABEL\tKEY SHA256\tSUBJECT\tNOT AFTER\tEXPIRES\tLAST USED\tFROM")
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04")
	}
	for _, c := range list {
		from := "-"
		if c.LastAddr.IsValid() {
			from = c.LastAddr.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.User, c.Label, c.Fingerprint.String()[:16],
			c.Subject, day(c.NotAfter), day(c.Expires), day(c.LastUsed), from)
	}
	tw.Flush()
}

// The store opened by this process.

func (a storeAppPasswords) addCert(ctx context.Context, req credstore.NewClientCert) (credstore.ClientCert, error) {
	return a.s.AddClientCert(ctx, req)
}

func (a storeAppPasswords) listCerts(ctx context.Context, user string) ([]credstore.ClientCert, error) {
	return a.s.ListClientCerts(ctx, user)
}

func (a storeAppPasswords) revokeCert(ctx context.Context, id, user, label string) (credstore.Revoked, error) {
	if id != "" {
		return a.s.Revoke(ctx, id)
	}
	return a.s.RevokeLabel(ctx, credstore.KindClientCert, user, label)
}

// The running serve's store, through the admin socket. The certificate
// travels as PEM, its public part only.

func (a socketAppPasswords) addCert(ctx context.Context, req credstore.NewClientCert) (credstore.ClientCert, error) {
	ans, err := a.call(ctx, adminRequest{Op: opCertAdd, User: req.User, Label: req.Label, Expires: req.Expires, Certificate: req.Certificate.Raw})
	if err != nil || ans.CertAdded == nil {
		return credstore.ClientCert{}, cmpErr(err, "admin socket: add answered nothing")
	}
	return *ans.CertAdded, nil
}

func (a socketAppPasswords) listCerts(ctx context.Context, user string) ([]credstore.ClientCert, error) {
	ans, err := a.call(ctx, adminRequest{Op: opCertList, User: user})
	return ans.Certs, err
}

func (a socketAppPasswords) revokeCert(ctx context.Context, id, user, label string) (credstore.Revoked, error) {
	ans, err := a.call(ctx, adminRequest{Op: opCertRevoke, ID: id, User: user, Label: label})
	if err != nil || ans.Revoked == nil {
		return credstore.Revoked{}, cmpErr(err, "admin socket: revoke answered nothing")
	}
	return *ans.Revoked, nil
}

// A serve without a store.

func (noStore) addCert(context.Context, credstore.NewClientCert) (credstore.ClientCert, error) {
	return credstore.ClientCert{}, errNoStore
}
func (noStore) listCerts(context.Context, string) ([]credstore.ClientCert, error) {
	return nil, errNoStore
}
func (noStore) revokeCert(context.Context, string, string, string) (credstore.Revoked, error) {
	return credstore.Revoked{}, errNoStore
}

// The admin socket's client certificate operations.
const (
	opCertAdd    = "cert-add"
	opCertList   = "cert-list"
	opCertRevoke = "cert-revoke"
)

// runCertAdmin carries out a client certificate request (opCertAdd,
// opCertList, opCertRevoke) on store.
func runCertAdmin(ctx context.Context, store appPasswords, req adminRequest) (adminAnswer, error) {
	var ans adminAnswer
	certs, ok := store.(clientCerts)
	if !ok {
		return ans, errors.New("this store does not hold client certificates")
	}
	var err error
	switch req.Op {
	case opCertAdd:
		cert, perr := x509.ParseCertificate(req.Certificate)
		if perr != nil {
			return ans, fmt.Errorf("%w: certificate: %v", credstore.ErrInvalid, perr)
		}
		var c credstore.ClientCert
		c, err = certs.addCert(ctx, credstore.NewClientCert{User: req.User, Label: req.Label, Expires: req.Expires, Certificate: cert})
		ans.CertAdded = &c
	case opCertList:
		ans.Certs, err = certs.listCerts(ctx, req.User)
	case opCertRevoke:
		var r credstore.Revoked
		r, err = certs.revokeCert(ctx, req.ID, req.User, req.Label)
		ans.Revoked = &r
	}
	return ans, err
}
