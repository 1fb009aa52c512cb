package proxytest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Append delivers msg into user's mailbox while Dovecot runs, creating the
// mailbox if needed. It logs in over a plaintext connection straight to
// Dovecot (never through a LoginOnly relay) and APPENDs, so Dovecot's
// indexes see the message at once and IDLE clients are notified. Lines of
// msg should end in CRLF (see MakeMessage).
//
// These logins identify themselves with ID and are not counted by
// AuthAttempts.
func (d *Dovecot) Append(t testing.TB, user, mailbox string, msg []byte) {
	t.Helper()
	pass, ok := d.Users[user]
	if !ok {
		t.Fatalf("proxytest: Append: no user %q", user)
	}
	c, err := imapclient.DialInsecure(d.direct, nil)
	if err != nil {
		t.Fatalf("proxytest: Append: %v", err)
	}
	defer c.Close()
	if _, err := c.ID(&imap.IDData{Name: harnessID}).Wait(); err != nil {
		t.Fatalf("proxytest: Append: ID: %v", err)
	}
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("proxytest: Append: LOGIN %s: %v", user, err)
	}
	if !strings.EqualFold(mailbox, "INBOX") {
		err := c.Create(mailbox, nil).Wait()
		var imapErr *imap.Error
		if err != nil && !(errors.As(err, &imapErr) && imapErr.Code == imap.ResponseCodeAlreadyExists) {
			t.Fatalf("proxytest: Append: CREATE %s: %v", mailbox, err)
		}
	}
	cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Time: time.Now()})
	if _, err := cmd.Write(msg); err != nil {
		t.Fatalf("proxytest: Append: %v", err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("proxytest: Append: %v", err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("proxytest: Append to %s/%s: %v", user, mailbox, err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("proxytest: Append: LOGOUT: %v", err)
	}
}
