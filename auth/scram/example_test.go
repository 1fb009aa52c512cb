package scram_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	xscram "github.com/xdg-go/scram"

	"github.com/imapgate/imapgate/auth/credstore"
	"github.com/imapgate/imapgate/auth/scram"
)

// One SCRAM-SHA-256 login against app passwords in auth/credstore, with
// xdg-go's client standing in for the mail client. On a TLS connection,
// ConnState carries its state and served certificate, and the client may
// pick SCRAM-SHA-256-PLUS.
func Example() {
	dir, err := os.MkdirTemp("", "scram-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	store, err := credstore.OpenBolt(filepath.Join(dir, "credentials.db"), credstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	p, secret, err := store.AddAppPassword(ctx, credstore.NewAppPassword{User: "alice", Label: "mbsync"})
	if err != nil {
		log.Fatal(err)
	}

	var found credstore.SCRAMCredential // what the audit names on success
	srv, err := scram.NewServer(func(ctx context.Context, login string) (scram.StoredCredentials, error) {
		c, err := store.LookupSCRAM(ctx, login, "imaps")
		var refused *credstore.CredentialError
		if errors.As(err, &refused) { // unknown, revoked, expired, out of scope
			return c.Keys, fmt.Errorf("%w: %w", scram.ErrUnknownUser, err)
		}
		found = c
		return c.Keys, err
	}, scram.Options{UnknownIterations: credstore.DefaultSCRAMIterations})
	if err != nil {
		log.Fatal(err)
	}

	login := func(name, password string) {
		x, err := srv.NewExchange(scram.SHA256, scram.ConnState{}, scram.ExchangeOptions{
			Admit: func(_ context.Context, id scram.Identity) error {
				user, _, _ := credstore.SplitSCRAMLogin(id.Login)
				fmt.Printf("spend a failure budget of %q\n", user)
				return nil
			},
		})
		if err != nil {
			log.Fatal(err)
		}
		client, _ := xscram.SHA256.NewClient(name, password, "")
		cc := client.NewConversation()
		msg, _ := cc.Step("")
		for {
			out, done, err := x.Step(ctx, []byte(msg))
			if err != nil {
				fmt.Println("NO:", strings.TrimSpace(scram.Reason(err)+" "+credstore.Reason(err)))
				return
			}
			msg, _ = cc.Step(string(out)) // the client checks the server's signature last
			if done {
				fmt.Printf("OK: %s logged in with %q, server verified %v\n", found.AppPassword.User, found.AppPassword.Label, cc.Valid())
				return
			}
		}
	}
	login(p.SCRAMLogin(), secret.Reveal())
	login(p.SCRAMLogin(), "a wrong password")
	login("alice#zzzzzzzz", secret.Reveal())
	// Output:
	// spend a failure budget of "alice"
	// OK: alice logged in with "mbsync", server verified true
	// spend a failure budget of "alice"
	// NO: scram_bad_proof
	// spend a failure budget of "alice"
	// NO: scram_unknown_user app_password_unknown
}
