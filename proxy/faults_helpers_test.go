package proxy

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapgate/imapgate/policy"
)

// What the upstream fault tests (upstreamfaults_test.go against a real
// Dovecot, upstreamgarbage_test.go against a scripted server) share.

// faultConnectTimeout and faultLoginTimeout are the proxy's
// connect_timeout and login_timeout in these tests: short, so a test
// measures them rather than waits for them.
const (
	faultConnectTimeout = 1 * time.Second
	faultLoginTimeout   = 1500 * time.Millisecond
)

// countingDecider is the policy a fault test watches: a real Guard over
// a MemoryStore, with a count of how each allowed attempt was settled.
type countingDecider struct {
	*policy.Guard
	failures, cancels, successes atomic.Int32
}

func newCountingDecider() *countingDecider {
	return &countingDecider{Guard: policy.NewGuard(nil, attackBudgets, nil)}
}

func (c *countingDecider) Failure(ctx context.Context, a policy.Attempt, d policy.Decision) time.Duration {
	c.failures.Add(1)
	return c.Guard.Failure(ctx, a, d)
}

func (c *countingDecider) Cancel(ctx context.Context, a policy.Attempt, d policy.Decision) {
	c.cancels.Add(1)
	c.Guard.Cancel(ctx, a, d)
}

func (c *countingDecider) Success(ctx context.Context, a policy.Attempt, d policy.Decision) {
	c.successes.Add(1)
	c.Guard.Success(ctx, a, d)
}

// requireNothingSpent fails the test unless every attempt so far was given
// back: no Failure, no failure counter in the store, none held.
func (c *countingDecider) requireNothingSpent(t testing.TB) {
	t.Helper()
	store := c.Store().(*policy.MemoryStore)
	counters, _ := store.Len()
	if n := c.failures.Load(); n != 0 || counters != 0 || store.Pending() != 0 {
		t.Fatalf("budgets spent: %d failures counted, %d failure counters, %d keys held (cancels %d)",
			n, counters, store.Pending(), c.cancels.Load())
	}
}

// login authenticates c as user and returns the tagged answer and how
// long it took.
func (c *textClient) login(tag, user, pass string) (string, time.Duration) {
	c.t.Helper()
	start := time.Now()
	c.send(tag + " AUTHENTICATE PLAIN " + saslPlain(user, pass))
	line := c.expect(tag + " ")
	return line, time.Since(start)
}

// waitEvent waits up to 10s for an audit event that match accepts.
func (tp *testProxy) waitEvent(t testing.TB, what string, match func(Event) bool) Event {
	t.Helper()
	// Longer than any wait the proxy itself runs (clientGoneDrain, 10 s,
	// is the longest): a test that asserts how long something took does
	// so itself, and this bound only keeps a missing event from hanging.
	const within = 2 * clientGoneDrain
	deadline := time.Now().Add(within)
	for {
		for _, e := range tp.audit.events(t) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event within %v; audit log:\n%s", what, within, tp.audit.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sessionEnd(e Event) bool { return e.Event == EventSessionEnd }

// requireAuthReasons fails unless the audit log has exactly n auth events,
// all with result and reason.
func requireAuthReasons(t testing.TB, tp *testProxy, result, reason string, n int) {
	t.Helper()
	var got []string
	for _, e := range tp.audit.events(t) {
		if e.Event == EventAuth {
			got = append(got, e.Result+"/"+e.Reason)
		}
	}
	if len(got) != n {
		t.Fatalf("auth events %q, want %d of %s/%s", got, n, result, reason)
	}
	for _, g := range got {
		if g != result+"/"+reason {
			t.Fatalf("auth events %q, want %d of %s/%s", got, n, result, reason)
		}
	}
}
