package credstore_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/imapgate/imapgate/auth/credstore"
)

func Example() {
	dir, err := os.MkdirTemp("", "credstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	store, err := credstore.OpenBolt(filepath.Join(dir, "credentials.db"), credstore.Options{
		OnRevoke: func(r credstore.Revoked) { fmt.Println("end the sessions of", r.User+"'s", r.Label) },
	})
	if err != nil {
		log.Fatal(err) // errors.Is(err, credstore.ErrLocked): serve has it open
	}
	defer store.Close()

	p, secret, err := store.AddAppPassword(ctx, credstore.NewAppPassword{User: "alice", Label: "phone"})
	if err != nil {
		log.Fatal(err)
	}
	// secret.Reveal() is shown to alice once; printing secret shows nothing.
	fmt.Println(secret, len(secret.Reveal()))

	login := credstore.AppPasswordAttempt{
		User: "alice", Password: secret.Reveal(), Listener: "imaps", Addr: netip.MustParseAddr("192.0.2.7"),
	}
	if _, err := store.VerifyAppPassword(ctx, login); err == nil {
		fmt.Println("alice is in")
	}
	if _, err := store.Revoke(ctx, p.ID); err != nil {
		log.Fatal(err)
	}
	_, err = store.VerifyAppPassword(ctx, login)
	fmt.Println(credstore.Reason(err))
	// Output:
	// [redacted] 34
	// alice is in
	// end the sessions of alice's phone
	// app_password_revoked
}
