package main

import "fmt"

// What a comparison writes into its result besides the samples: the
// problems seen, the resumed handshakes, the settings, and at the end
// the table's rows and notes.

// problem records something that went wrong without ending the run.
func (c *comparison) problem(format string, a ...any) {
	p := fmt.Sprintf(format, a...)
	c.log.Warn(p)
	c.res.Problems = append(c.res.Problems, p)
}

// countResumed adds a resumed run's logins and resumed handshakes to the
// contender's counts at workers.
func (c *comparison) countResumed(contender string, workers, logins, resumed int) {
	byName := c.resumeCounts[workers]
	if byName == nil {
		byName = map[string]*resumeCount{}
		c.resumeCounts[workers] = byName
	}
	rc := byName[contender]
	if rc == nil {
		rc = &resumeCount{Workers: workers, Contender: contender}
		byName[contender] = rc
	}
	rc.Logins += logins
	rc.Resumed += resumed
}

// resumption lists the resumed logins' counts in the order of o.Workers,
// nginx before imapgate; a contender with no successful run has none.
func (c *comparison) resumption() []resumeCount {
	var rcs []resumeCount
	for _, w := range c.o.Workers {
		for _, name := range []string{nameNginx, nameImapgate} {
			if rc := c.resumeCounts[w][name]; rc != nil {
				rcs = append(rcs, *rc)
			}
		}
	}
	return rcs
}

// settings is what the run did, for the result's header and notes.
func (c *comparison) settings() compareSettings {
	o := c.o
	st := compareSettings{
		Rounds: o.Rounds, Sessions: o.Sessions, SourceCount: o.SourceCount, HoldSeconds: o.Hold.Seconds(),
		Users: o.Users, Messages: o.Messages, MessageSize: o.MessageSize,
		LoginSeconds: o.Duration.Seconds(), Workers: o.Workers, NoopCount: o.Count,
		NginxWorkers: nginxWorkers, MemoryLogins: c.memContenders != nil && o.MemoryLogins, Quick: o.Quick,
	}
	if o.runs("storm") {
		st.StormSessions, st.StormWithinSeconds, st.NginxStormBacklog = o.StormSessions, o.StormWithin.Seconds(), o.NginxBacklog
		st.Somaxconn = somaxconn()
		st.ImapgateUpstreamLogins = o.MaxUpstreamLogins
	}
	if o.Scenarios != nil {
		for _, s := range compareScenarios {
			if o.Scenarios[s] {
				st.Scenarios = append(st.Scenarios, s)
			}
		}
	}
	st.ResumedLogins = st.MemoryLogins && o.ResumedLogins
	st.ReuseProcesses = o.ReuseProcesses
	if st.MemoryLogins {
		st.MemoryUpstream = memoryUpstreamMode
	}
	return st
}

// finish computes the table from the samples and writes the notes.
// authRequests and memAuthRequests are the logins the auth_http
// responders of the two nginx answered.
func (c *comparison) finish(authRequests, memAuthRequests int64) {
	var figs []figure
	for _, f := range compareFigures(c.o.Workers, c.res.Settings.MemoryLogins, c.res.Settings.ResumedLogins, c.o.StormSessions) {
		if c.o.runs(f.scenario) {
			figs = append(figs, f)
		}
	}
	c.res.Rows = buildRows(c.samples, figs)
	c.res.Resumption = c.resumption()
	c.res.Floor = c.floorFigures()
	c.res.Notes = compareNotes(c.res, authRequests, memAuthRequests)
}
