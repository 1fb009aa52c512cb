package main

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/imapgate/imapgate/proxy"
)

// TestListenerAuthFromConfig: good-listen-auth.toml (the README's worked
// example) turns into these proxy settings: the internet listener refuses
// the real password, the office listener passes it through with its own
// mechanisms, and the guest network's rule turns it off there.
func TestListenerAuthFromConfig(t *testing.T) {
	c := mustParse(t, "testdata/config/good-listen-auth.toml")
	listeners, rules := listenerAuth(c)
	wantListeners := map[string]proxy.ListenerAuth{
		"0.0.0.0:993":  {Mechanisms: []string{"PLAIN"}, RefusePassThrough: true},
		"10.0.0.1:143": {Mechanisms: []string{"PLAIN"}, RefusePassThrough: false},
	}
	if !reflect.DeepEqual(listeners, wantListeners) {
		t.Errorf("listeners\n got %+v\nwant %+v", listeners, wantListeners)
	}
	off := false
	wantRules := []proxy.PassThroughRule{{Networks: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}, PassThrough: &off}}
	if !reflect.DeepEqual(rules, wantRules) {
		t.Errorf("rules\n got %+v\nwant %+v", rules, wantRules)
	}
}

// TestPolicyRulesWithoutPassthroughDecideNothing: rules that only change
// budgets give the proxy no pass-through rules at all.
func TestPolicyRulesWithoutPassthroughDecideNothing(t *testing.T) {
	c := mustParse(t, "testdata/config/good-policy-rules.toml")
	if _, rules := listenerAuth(c); rules != nil {
		t.Errorf("rules = %+v, want none", rules)
	}
}
