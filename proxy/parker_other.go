//go:build !linux

package proxy

// parker is Linux-only (epoll); elsewhere each waiting relay direction keeps
// its goroutine, parked in the runtime's poller.
type parker struct{}

func newParker() *parker                   { return nil }
func (p *parker) park(d *direction) bool   { return false }
func (p *parker) unpark(d *direction) bool { return false }
func (p *parker) close()                   {}
