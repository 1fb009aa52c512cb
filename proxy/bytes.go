package proxy

// Bytes returns the bytes relayed so far, client to upstream (in) and
// upstream to client (out): those of ended sessions plus the live count
// of every session relaying now, so a phone in IDLE for hours shows its
// traffic as it happens. The sums never go down, so they suit a Prometheus
// counter. It costs one pass over the open sessions: call it per scrape,
// not per byte.
func (s *Server) Bytes() (in, out int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, out = s.endedIn, s.endedOut
	for sess := range s.sessions {
		sess.mu.Lock()
		r := sess.relay
		sess.mu.Unlock()
		if r != nil {
			in += r.in.Load()
			out += r.out.Load()
		}
	}
	return in, out
}
