package main

import (
	"bufio"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stormServer is a plaintext IMAP server just big enough for a storm's
// sessions (greeting, AUTHENTICATE, SELECT, IDLE), which misbehaves on
// the connections its misbehave function picks by their number, counted
// from 1 in accept order.
type stormServer struct {
	addr  string
	ln    net.Listener
	conns atomic.Int64
	// misbehave says what connection n gets: "" a well-behaved session,
	// "refuse" NO to its AUTHENTICATE, "close" its socket closed before
	// the greeting.
	misbehave func(n int64) string
	wg        sync.WaitGroup
}

func startStormServer(t *testing.T, misbehave func(n int64) string) *stormServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stormServer{addr: ln.Addr().String(), ln: ln, misbehave: misbehave}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *stormServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.serve(c, s.misbehave(s.conns.Add(1)))
	}
}

func (s *stormServer) serve(c net.Conn, how string) {
	defer s.wg.Done()
	defer c.Close()
	if how == "close" {
		return
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR IDLE AUTH=PLAIN] storm test server\r\n"))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
		verb, _, _ := strings.Cut(cmd, " ")
		switch strings.ToUpper(verb) {
		case "AUTHENTICATE":
			if how == "refuse" {
				c.Write([]byte(tag + " NO [UNAVAILABLE] try again later\r\n"))
				continue
			}
			c.Write([]byte(tag + " OK logged in\r\n"))
		case "SELECT":
			c.Write([]byte("* 0 EXISTS\r\n" + tag + " OK [READ-WRITE] selected\r\n"))
		case "IDLE":
			c.Write([]byte("+ idling\r\n"))
		default:
			c.Write([]byte(tag + " BAD not in this test\r\n"))
		}
	}
}

func stormTarget(addr string) target {
	return target{Addr: addr, TLS: tlsNone, User: testUser, Password: testPass, Timeout: 5 * time.Second}
}

// After the drop, five reconnects are refused at AUTHENTICATE and three
// find their connection closed before the greeting: the storm counts
// each of them by kind, retries them, and all twenty sessions come back.
func TestStormCountsRefusedLoginsAndRetriesThem(t *testing.T) {
	const sessions = 20
	srv := startStormServer(t, func(n int64) string {
		switch {
		case n > sessions && n <= sessions+5:
			return "refuse"
		case n > sessions+5 && n <= sessions+8:
			return "close"
		}
		return ""
	})
	res, err := runStorm(testContext(t), stormOptions{Target: stormTarget(srv.addr), Sessions: sessions, Concurrency: 4,
		Hold: 10 * time.Millisecond, Settle: 10 * time.Millisecond, Within: 30 * time.Second, RetryDelay: 10 * time.Millisecond,
		SampleEvery: 5 * time.Millisecond, PIDs: []int{os.Getpid()}})
	if err != nil {
		t.Fatal(err)
	}
	if res.SetUp != sessions || res.Back != sessions {
		t.Fatalf("set up %d, back %d, want %d each: %+v", res.SetUp, res.Back, sessions, res)
	}
	if res.Attempts != sessions+8 || res.AttemptsNotOK != 8 || res.LoginsRefused != 5 {
		t.Errorf("attempts %d, not OK %d, logins refused %d; want %d, 8, 5", res.Attempts, res.AttemptsNotOK, res.LoginsRefused, sessions+8)
	}
	if res.SessionsNotOK < 1 || res.SessionsNotOK > 8 {
		t.Errorf("%d sessions not OK, want 1 to 8 (8 failed attempts)", res.SessionsNotOK)
	}
	kinds := map[string]int{}
	for _, e := range res.AttemptErrors {
		kinds[e.Error] += e.Count
	}
	if kinds["AUTHENTICATE: NO [UNAVAILABLE] try again later"] != 5 {
		t.Errorf("attempt errors %+v: want 5 AUTHENTICATE NO", res.AttemptErrors)
	}
	if n := res.AttemptsNotOK - kinds["AUTHENTICATE: NO [UNAVAILABLE] try again later"]; n != 3 {
		t.Errorf("attempt errors %+v: want 3 more (the closed connections)", res.AttemptErrors)
	}
	// A retried session waited at least one retry delay.
	if !(res.AllBackSeconds >= 0.01 && res.Reconnect.MaxMicros <= res.AllBackSeconds*1e6+1 && res.Reconnect.P50Micros > 0) {
		t.Errorf("all back after %vs, reconnect %+v", res.AllBackSeconds, res.Reconnect)
	}
	if m := res.Memory; m == nil || m.PeakRSSBytes <= 0 || m.AfterStorm.RSSBytes <= 0 {
		t.Errorf("memory %+v, want the samples of this process", m)
	}
}

// A target that closes every connection after the drop: no session comes
// back, each retries until the storm's bound, and the storm stops by
// itself.
func TestStormGivesUpAtItsBoundAfterRetrying(t *testing.T) {
	const sessions = 10
	srv := startStormServer(t, func(n int64) string {
		if n > sessions {
			return "close"
		}
		return ""
	})
	start := time.Now()
	res, err := runStorm(testContext(t), stormOptions{Target: stormTarget(srv.addr), Sessions: sessions,
		Hold: 10 * time.Millisecond, Settle: 10 * time.Millisecond, Within: 500 * time.Millisecond, RetryDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the storm took %v, want it to stop at its bound of 500ms", took)
	}
	if res.SetUp != sessions || res.Back != 0 || res.AllBackSeconds != 0 || res.StormSeconds < 0.5 {
		t.Errorf("set up %d, back %d, all back after %v, storm %vs: want %d, 0, 0 and at least 0.5s", res.SetUp, res.Back, res.AllBackSeconds, res.StormSeconds, sessions)
	}
	if res.Attempts < 3*sessions || res.AttemptsNotOK != res.Attempts || res.SessionsNotOK != sessions || res.LoginsRefused != 0 {
		t.Errorf("attempts %d, not OK %d, sessions not OK %d, refused %d: want each session retried (>= %d attempts), all failed, none at AUTHENTICATE",
			res.Attempts, res.AttemptsNotOK, res.SessionsNotOK, res.LoginsRefused, 3*sessions)
	}
}

func TestStormRefusesMoreSessionsThanPortsPerSource(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/ipv4/ip_local_port_range"); err != nil {
		t.Skip("no /proc/sys/net/ipv4/ip_local_port_range")
	}
	if err := checkEphemeralPorts(9500, 16); err != nil {
		t.Errorf("9,500 sessions over 16 sources: %v", err)
	}
	if err := checkEphemeralPorts(100_000, 1); err == nil || !strings.Contains(err.Error(), "use more source addresses") {
		t.Errorf("100,000 sessions from one address: %v, want an error saying to use more source addresses", err)
	}
}
