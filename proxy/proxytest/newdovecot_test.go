package proxytest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A load tool is not a test: NewDovecot and Close do what StartDovecot
// and its cleanup do, with many users that all have mail.
func TestNewDovecotOutsideATestWithManyUsers(t *testing.T) {
	t.Parallel()
	if _, err := dovecotBinary(); errors.Is(err, ErrNoDovecot) {
		missing(t, err.Error())
	}
	start := time.Now()
	d, err := NewDovecot(DovecotOptions{
		Users:              NumberedUsers(300, "load-Secret!"),
		Messages:           200,
		MessageSize:        50_000,
		OtherUsersMessages: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("300 users, 200 messages of 50 KB: started in %v", time.Since(start))
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()

	for _, tt := range []struct {
		user   string
		exists int
	}{{"user1", 200}, {"user2", 2}, {"user300", 2}} {
		c := dialText(t, d.Addr, nil)
		if resp := c.cmd(fmt.Sprintf(`LOGIN %s "load-Secret!"`, tt.user)); !strings.Contains(resp, " OK ") {
			t.Fatalf("LOGIN %s: %q", tt.user, resp)
		}
		if resp := c.cmd("SELECT INBOX"); !strings.Contains(resp, fmt.Sprintf("* %d EXISTS", tt.exists)) {
			t.Errorf("SELECT INBOX of %s: %q, want %d EXISTS", tt.user, resp, tt.exists)
		}
		c.cmd("LOGOUT")
	}
	if resp := dialText(t, d.Addr, nil).cmd(`LOGIN user301 "load-Secret!"`); !strings.Contains(resp, " NO ") {
		t.Errorf("LOGIN user301, one past NumberedUsers(300): %q", resp)
	}

	pid, dir := d.PID, d.Dir
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Dovecot (PID %d) still runs after Close: %v", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Close: %v", dir, err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewDovecotRejectsBadOptions(t *testing.T) {
	t.Parallel()
	if _, err := dovecotBinary(); errors.Is(err, ErrNoDovecot) {
		missing(t, err.Error())
	}
	for _, o := range []DovecotOptions{
		{Users: map[string]string{}},
		{Users: map[string]string{"user one": "x"}},
		{MaxSessions: -1},
	} {
		if d, err := NewDovecot(o); err == nil {
			d.Close()
			t.Errorf("NewDovecot(%+v): no error", o)
		}
	}
}
